"""The camera's noise: the Poisson-Gaussian model and its synthesis (model.py), profiles fitted from
flat fields, measured on a photo or taken from darktable (profile.py), and the choice of the profile
for one photo (choose.py)."""
