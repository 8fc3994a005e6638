"""What reads and writes files: the raw (raw.py), the linear or CFA DNG (dng.py), the sRGB preview
and the GIMP comparison (preview.py), and the 16-bit TIFF export (export_tiff.py)."""
