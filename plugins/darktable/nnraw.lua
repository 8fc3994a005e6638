--[[
  nnraw for darktable: turn the selected raws into clean, demosaiced, still-linear DNGs with the
  `nnraw` command line, import each DNG and group it with its raw.

  copyright (c) 2026 the nnraw authors; MIT licence (see nnraw's pyproject.toml)

  INSTALL (nnraw is not on PyPI: install the wheel built from its sources, see its README.md,
  "For photographers")
    * pipx install nnraw-<version>-<tags>.whl          (puts `nnraw` on PATH; or pip install --user)
    * nnraw install-plugin darktable                   (then restart darktable)
      It copies this file to ~/.config/darktable/lua/contrib/nnraw.lua, adds the line
      require "contrib/nnraw"   to ~/.config/darktable/luarc (a backup of luarc is kept) and records
      the path of that nnraw in lua/contrib/nnraw-program.txt, which this script runs, so nnraw need not
      be on darktable's PATH. `nnraw install-plugin darktable --uninstall` takes it all back.
      With lua-scripts' script manager, luarc is left alone: start "nnraw" (folder "contrib") there.
    * by hand: copy this file there and add the require line yourself.

  USAGE
    * lighttable: select raws, press "convert to DNG" in the nnraw module (right panel), or assign a
      shortcut to "nnraw: convert selected raws to DNG" (preferences > shortcuts > lua scripts)
    * settings: preferences > lua options (nnraw program, model, output folder, overwrite, group leader);
      "nnraw: program" empty = the nnraw recorded at install, else `nnraw` from PATH

  The script only runs the `nnraw` command line (`nnraw convert --json`); it contains no image code.
  It works with darktable 4.2 (Lua API 9.0) and later, with or without lua-scripts' lib/dtutils.
  It is self-contained: lua-scripts' libraries are used only for the API check when present.

  Scripting and tests: the value this file returns (script_data, as script_manager expects) also
  carries `convert_images(images)`, the whole conversion without any GUI, and `shell_quote(s)`.
]]

local dt = require "darktable"

local MODULE = "nnraw"
local MIN_API = {9, 0, 0}                  -- darktable 4.2

local script_data = {}
script_data.metadata = {
  name = "nnraw",
  purpose = "demosaic and denoise raws into linear DNGs with the nnraw command line",
  author = "nnraw authors",
  help = "docs/PLUGINS.md in nnraw's sources",
}
script_data.destroy = nil
script_data.destroy_method = nil
script_data.restart = nil
script_data.show = nil

-- translations: none shipped yet; every user-facing string goes through _() for later
local function _(msg)
  return msg
end

-- API version check: lua-scripts' helper when it is installed, else the same comparison here
local function api_version_ok()
  local ok, du = pcall(require, "lib/dtutils")
  if ok and type(du) == "table" and du.check_min_api_version then
    return pcall(du.check_min_api_version, table.concat(MIN_API, "."), MODULE)
  end
  local have = {dt.configuration.api_version_major, dt.configuration.api_version_minor,
                dt.configuration.api_version_patch or 0}
  for i = 1, 3 do
    if have[i] ~= MIN_API[i] then
      return have[i] > MIN_API[i]
    end
  end
  return true
end

if not api_version_ok() then
  local msg = string.format(_("nnraw: needs darktable Lua API %s or newer (darktable 4.2), this is %s"),
    table.concat(MIN_API, "."), dt.configuration.api_version_string)
  dt.print_error(msg)
  dt.print(msg)
  return script_data
end

local is_windows = dt.configuration.running_os == "windows"
local has_gui = dt.configuration.has_gui and dt.gui ~= nil

-- ---------------------------------------------------------------------------------------------
-- which nnraw to run: the "nnraw: program" preference when set, else the program that
-- `nnraw install-plugin darktable` recorded in nnraw-program.txt beside this file, else PATH
-- ---------------------------------------------------------------------------------------------

local PROGRAM_FILE = "nnraw-program.txt"

-- the folder of this file ("@/home/me/.config/darktable/lua/contrib/nnraw.lua" -> ".../contrib")
local script_folder = (function()
  local source = debug and debug.getinfo and debug.getinfo(1, "S").source or ""
  local folder = source:sub(1, 1) == "@" and source:sub(2):match("^(.*)[/\\][^/\\]*$")
  return folder or (dt.configuration.config_dir .. "/lua/contrib")
end)()

--- The nnraw program recorded at install time, or nil.
local function installed_program()
  local f = io.open(script_folder .. (is_windows and "\\" or "/") .. PROGRAM_FILE, "r")
  if not f then return nil end
  local path = (f:read("l") or ""):match("^%s*(.-)%s*$")
  f:close()
  return path ~= "" and path or nil
end

--- The program to run, given the preference's value ("" or the bare word nnraw: not set).
local function program_for(preference)
  if preference ~= "" and preference ~= "nnraw" then return preference end
  return installed_program() or "nnraw"
end

-- ---------------------------------------------------------------------------------------------
-- preferences (preferences > lua options)
-- ---------------------------------------------------------------------------------------------

-- Registered only with a GUI: in `darktable-cli --core` dt.preferences.register never returns (4.2).
-- Every preference defaults to "" or false, so reading an unregistered one gives its default.
local function register_preferences()
  dt.preferences.register(MODULE, "executable", "string", _("nnraw: program"),
    _("the nnraw command's full path; empty = the nnraw that `nnraw install-plugin darktable` recorded, else nnraw from PATH"), "")
  dt.preferences.register(MODULE, "model", "string", _("nnraw: model"),
    _("network: empty or default = best quality (demosaic + denoise network, slowest); fast = the smaller network (about 4x quicker, weaker at high ISO); none = classic demosaic only, no denoising; other names: `nnraw info`"), "")
  dt.preferences.register(MODULE, "strength", "float", _("nnraw: strength"),
    _("how hard to denoise: 0 = no denoising (the plain demosaic), 1 = as measured (default), 2 = twice as hard"),
    1.0, 0.0, 2.0, 0.05)
  dt.preferences.register(MODULE, "output_kind", "enum", _("nnraw: output"),
    _("linear: demosaiced and denoised DNG; cfa: denoised Bayer DNG in the raw's own layout, demosaiced by darktable"),
    "linear", "linear", "cfa")
  dt.preferences.register(MODULE, "output_folder", "string", _("nnraw: output folder"),
    _("folder for the DNGs; empty = beside each raw (IMG_1234.CR2 -> IMG_1234-nnraw.dng)"), "")
  dt.preferences.register(MODULE, "overwrite", "bool", _("nnraw: overwrite existing DNGs"),
    _("replace a DNG written by an earlier run instead of reporting an error"), false)
  dt.preferences.register(MODULE, "raw_leads_group", "bool", _("nnraw: keep the raw as group leader"),
    _("off: the new DNG leads the group (shown when groups are collapsed); on: the group keeps its leader"), false)
end

local function settings()
  local function str(name)
    return (dt.preferences.read(MODULE, name, "string") or ""):match("^%s*(.-)%s*$")
  end
  local exe = program_for(str("executable"))
  -- read as strings: an unset preference is "" (then nnraw's default), not 0
  local strength = tonumber((str("strength"):gsub(",", ".")))
  if strength == nil or strength ~= strength then strength = 1.0 end
  strength = math.max(0.0, math.min(2.0, strength))
  local kind = str("output_kind")
  return {
    executable = exe ~= "" and exe or "nnraw",
    model = str("model"),
    strength = strength,
    output_kind = (kind == "cfa") and "cfa" or "linear",
    output_folder = str("output_folder"),
    overwrite = dt.preferences.read(MODULE, "overwrite", "bool"),
    dng_leads_group = not dt.preferences.read(MODULE, "raw_leads_group", "bool"),
  }
end

-- ---------------------------------------------------------------------------------------------
-- shell quoting: dt.control.execute hands a string to the shell
-- ---------------------------------------------------------------------------------------------

--- Quote one argument for the shell that dt.control.execute uses.
-- POSIX sh: wrap in single quotes, each ' becomes '\'' (nothing inside single quotes is special).
-- Windows cmd: wrap in double quotes; " cannot occur in Windows file names, and % (variable
-- expansion even inside quotes) is refused rather than risk expansion.
local function shell_quote(s)
  s = tostring(s)
  if is_windows then
    if s:find('["%%\r\n]') then
      error(string.format(_("nnraw: cannot pass %q to the Windows shell safely (contains \" or %% or a newline)"), s))
    end
    return '"' .. s .. '"'
  end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- ---------------------------------------------------------------------------------------------
-- a small JSON reader for nnraw's --json report (objects, arrays, strings, numbers, literals)
-- ---------------------------------------------------------------------------------------------

local function json_decode(text)
  local pos = 1
  local value

  local function fail(what)
    error(string.format("invalid JSON at byte %d: %s", pos, what), 0)
  end
  local function skip()
    pos = text:find("[^ \t\r\n]", pos) or (#text + 1)
  end
  local function utf8_char(cp)
    if cp < 0x80 then return string.char(cp) end
    if cp < 0x800 then return string.char(0xC0 + cp // 0x40, 0x80 + cp % 0x40) end
    if cp < 0x10000 then
      return string.char(0xE0 + cp // 0x1000, 0x80 + (cp // 0x40) % 0x40, 0x80 + cp % 0x40)
    end
    return string.char(0xF0 + cp // 0x40000, 0x80 + (cp // 0x1000) % 0x40, 0x80 + (cp // 0x40) % 0x40,
      0x80 + cp % 0x40)
  end
  local escapes = {['"'] = '"', ['\\'] = '\\', ['/'] = '/', b = '\b', f = '\f', n = '\n', r = '\r', t = '\t'}

  local function string_value()
    local out = {}
    pos = pos + 1                                -- opening quote
    while true do
      local c = text:sub(pos, pos)
      if c == "" then fail("unterminated string") end
      if c == '"' then pos = pos + 1; return table.concat(out) end
      if c == "\\" then
        local e = text:sub(pos + 1, pos + 1)
        if e == "u" then
          local cp = tonumber(text:sub(pos + 2, pos + 5), 16) or fail("bad \\u escape")
          pos = pos + 6
          if cp >= 0xD800 and cp < 0xDC00 and text:sub(pos, pos + 1) == "\\u" then
            local lo = tonumber(text:sub(pos + 2, pos + 5), 16) or fail("bad \\u escape")
            cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
            pos = pos + 6
          end
          out[#out + 1] = utf8_char(cp)
        else
          out[#out + 1] = escapes[e] or fail("bad escape \\" .. e)
          pos = pos + 2
        end
      else
        local stop = text:find('["\\]', pos) or (#text + 1)
        out[#out + 1] = text:sub(pos, stop - 1)
        pos = stop
      end
    end
  end

  function value()
    skip()
    local c = text:sub(pos, pos)
    if c == "{" then
      local obj = {}
      pos = pos + 1
      skip()
      if text:sub(pos, pos) == "}" then pos = pos + 1; return obj end
      while true do
        skip()
        if text:sub(pos, pos) ~= '"' then fail("expected a key") end
        local key = string_value()
        skip()
        if text:sub(pos, pos) ~= ":" then fail("expected ':'") end
        pos = pos + 1
        obj[key] = value()
        skip()
        c = text:sub(pos, pos)
        pos = pos + 1
        if c == "}" then return obj end
        if c ~= "," then fail("expected ',' or '}'") end
      end
    elseif c == "[" then
      local arr = {}
      pos = pos + 1
      skip()
      if text:sub(pos, pos) == "]" then pos = pos + 1; return arr end
      while true do
        arr[#arr + 1] = value()
        skip()
        c = text:sub(pos, pos)
        pos = pos + 1
        if c == "]" then return arr end
        if c ~= "," then fail("expected ',' or ']'") end
      end
    elseif c == '"' then
      return string_value()
    elseif text:sub(pos, pos + 3) == "true" then
      pos = pos + 4; return true
    elseif text:sub(pos, pos + 4) == "false" then
      pos = pos + 5; return false
    elseif text:sub(pos, pos + 3) == "null" then
      pos = pos + 4; return nil
    else
      local num = text:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
      if not num or num == "" then fail("unexpected " .. (c == "" and "end of text" or c)) end
      pos = pos + #num
      return tonumber(num)
    end
  end

  local result = value()
  skip()
  if pos <= #text then fail("trailing text") end
  return result
end

-- ---------------------------------------------------------------------------------------------
-- conversion (no GUI: also what tests and other scripts call)
-- ---------------------------------------------------------------------------------------------

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local text = f:read("a") or ""
  f:close()
  return text
end

local function path_join(folder, name)
  local sep = is_windows and "\\" or "/"
  return folder:sub(-1) == sep and folder .. name or folder .. sep .. name
end

local temp_counter = 0
local function temp_path(suffix)
  temp_counter = temp_counter + 1
  return path_join(dt.configuration.tmp_dir,
    string.format("nnraw-%d-%d-%d%s", os.time(), math.random(1, 1e9), temp_counter, suffix))
end

--- A strength for the command line: "1.25" in any locale (string.format's %g would write "1,25" in some).
local function format_strength(s)
  local hundredths = math.floor(s * 100 + 0.5)
  return string.format("%d.%02d", hundredths // 100, hundredths % 100)
end

--- The shell command that converts one raw, with its report going to json_path and messages to err_path.
local function convert_command(opts, raw_path, json_path, err_path)
  local args = {shell_quote(opts.executable), "convert", "--json", "--quiet"}
  if opts.model ~= "" then
    args[#args + 1] = "--model"
    args[#args + 1] = shell_quote(opts.model)
  end
  if opts.strength and math.abs(opts.strength - 1.0) > 1e-9 then
    args[#args + 1] = "--strength"
    args[#args + 1] = format_strength(opts.strength)
  end
  if opts.output_kind == "cfa" then
    args[#args + 1] = "--output"
    args[#args + 1] = "cfa"
  end
  if opts.output_folder ~= "" then
    args[#args + 1] = "--out-dir"
    args[#args + 1] = shell_quote(opts.output_folder)
  end
  if opts.overwrite then args[#args + 1] = "--overwrite" end
  args[#args + 1] = shell_quote(raw_path)
  args[#args + 1] = ">"
  args[#args + 1] = shell_quote(json_path)
  args[#args + 1] = "2>"
  args[#args + 1] = shell_quote(err_path)
  local cmd = table.concat(args, " ")
  if is_windows then cmd = '"' .. cmd .. '"' end   -- cmd /c strips one outer pair of quotes
  return cmd
end

--- The last non-empty line of nnraw's messages (the one that names the file and the problem).
local function last_message(stderr_text)
  local last
  for line in stderr_text:gmatch("[^\r\n]+") do
    if line:find("%S") then last = line end
  end
  return last
end

--- Run a shell command, return its exit status.
-- With a GUI, dt.control.execute releases darktable's Lua lock while the command runs so the GUI
-- stays responsive. Headless (`darktable-cli --core --luacmd`) nothing needs to stay responsive,
-- and yielding would let darktable-cli finish and exit mid-conversion: os.execute blocks instead.
local function run_shell(cmd)
  if has_gui then return dt.control.execute(cmd) end
  local _ok, _how, status = os.execute(cmd)
  return status
end

--- Run `nnraw convert --json` on one raw; returns ok, output path or error message, and nnraw's
-- notes on the photo (a list: e.g. the noise profile it had to guess or correct).
local function convert_one(opts, raw_path)
  local json_path, err_path = temp_path(".json"), temp_path(".err")
  local ok_cmd, cmd = pcall(convert_command, opts, raw_path, json_path, err_path)
  if not ok_cmd then return false, cmd end
  dt.print_log("nnraw: " .. cmd)
  local status = run_shell(cmd)
  local stdout_text, stderr_text = read_file(json_path), read_file(err_path)
  os.remove(json_path)
  os.remove(err_path)

  local parsed_ok, report = pcall(json_decode, stdout_text)
  if parsed_ok and type(report) == "table" and type(report.results) == "table" and report.results[1] then
    local r = report.results[1]
    if r.ok and r.output then return true, r.output, (type(r.notes) == "table" and r.notes or {}) end
    return false, r.error or last_message(stderr_text) or string.format(_("nnraw exited with status %s"), status)
  end
  -- no report: nnraw did not start (not installed?) or crashed
  local why = last_message(stderr_text)
  if not why then
    why = string.format(_("`%s` gave no report (exit status %s): is nnraw installed? set its path in preferences > lua options"),
      opts.executable, tostring(status))
  end
  return false, why
end

--- Import a converted DNG and group it with its raw; returns the new image.
local function import_and_group(raw_image, dng_path, dng_leads)
  local dng = dt.database.import(dng_path)
  if not dng then error(string.format(_("darktable could not import %s"), dng_path), 0) end
  if dng.id ~= raw_image.id then
    dng:group_with(raw_image)                      -- joins the raw's group (keeps raw+jpeg pairs together)
    if dng_leads then dng:make_group_leader() end  -- else the group keeps the leader it had
  end
  return dng
end

local function report_failure(image_name, message)
  local text = string.format(_("nnraw: %s failed: %s"), image_name, message)
  dt.print_error(text)
  dt.print(text)
end

--- Convert darktable images (a list, e.g. dt.gui.action_images) with nnraw.
-- Each DNG is imported and grouped with its raw. `job` (optional) is a dt.gui job: its progress bar
-- advances per file and a cancelled job stops before the next file. Returns a list of
-- {source = image, ok = bool, output = path, image = imported DNG, error = message, notes = {nnraw's
-- notes on the photo}}, in order.
local function convert_images(images, job)
  local opts = settings()
  local list = {}
  for _i, image in ipairs(images) do list[#list + 1] = image end
  local results = {}
  for i, image in ipairs(list) do
    if job and not job.valid then
      dt.print(string.format(_("nnraw: cancelled after %d of %d images"), i - 1, #list))
      break
    end
    local raw_path = path_join(image.path, image.filename)
    local result = {source = image, ok = false}
    -- no image.is_raw filter: darktable sets it only once an image was loaded; nnraw itself
    -- refuses non-raw input with a message naming the file
    local ok, out, notes = convert_one(opts, raw_path)
    result.notes = notes or {}
    for _j, note in ipairs(result.notes) do   -- what nnraw assumed about this photo: the photographer sees it
      dt.print_log("nnraw: " .. note)
      dt.print("nnraw: " .. note)
    end
    if ok then
      local imported, dng_or_err = pcall(import_and_group, image, out, opts.dng_leads_group)
      result.ok, result.output = imported, out
      if imported then result.image = dng_or_err else result.error = tostring(dng_or_err) end
    else
      result.error = out
    end
    if not result.ok then report_failure(image.filename, result.error) end
    results[#results + 1] = result
    if job then job.percent = i / #list end
  end
  local n_ok = 0
  for _i, r in ipairs(results) do if r.ok then n_ok = n_ok + 1 end end
  dt.print(string.format(_("nnraw: %d of %d images converted to DNG"), n_ok, #list))
  return results
end

-- ---------------------------------------------------------------------------------------------
-- GUI: lighttable module, shortcut, background job
-- ---------------------------------------------------------------------------------------------

local running = false
local widgets = {}                 -- the lighttable module's widgets (GUI only)

--- Save the module's strength and output (a slider has no change callback in Lua API 9.0) as the
-- preferences that convert_images reads.
local function save_module_settings()
  if widgets.strength then
    dt.preferences.write(MODULE, "strength", "float", widgets.strength.value)
  end
  if widgets.output_kind and widgets.output_kind.value then
    dt.preferences.write(MODULE, "output_kind", "enum", widgets.output_kind.value)
  end
end

local function convert_action_images()
  if running then
    dt.print(_("nnraw: a conversion is already running"))
    return
  end
  local images = dt.gui.action_images
  if not images or #images == 0 then
    dt.print(_("nnraw: select the raws to convert first"))
    return
  end
  save_module_settings()
  running = true
  local job = dt.gui.create_job(string.format(_("nnraw: converting %d images"), #images), true,
    function(j) j.valid = false end)
  local ok, err = pcall(convert_images, images, job)
  if job.valid then job.valid = false end
  running = false
  if not ok then report_failure(_("conversion"), tostring(err)) end
end

local function register_shortcut()
  dt.register_event(MODULE .. "_convert", "shortcut",
    function(event, shortcut) convert_action_images() end,
    _("nnraw: convert selected raws to DNG"))
end

local module_installed = false
local view_event_registered = false

local function install_module()
  if module_installed then return end
  widgets.button = dt.new_widget("button") {
    label = _("convert to DNG"),
    tooltip = _("demosaic and denoise the selected raws with nnraw; each DNG is imported and grouped with its raw"),
    clicked_callback = function(_w) convert_action_images() end,
  }
  local opts = settings()
  widgets.strength = dt.new_widget("slider") {
    label = _("strength"),
    tooltip = _("how hard to denoise: 0 = no denoising (the plain demosaic), 1 = as measured, 2 = twice as hard"),
    soft_min = 0.0, soft_max = 2.0, hard_min = 0.0, hard_max = 2.0, step = 0.05, digits = 2,
  }
  widgets.strength.value = opts.strength   -- after the limits (a table constructor has no order)
  widgets.output_kind = dt.new_widget("combobox") {
    label = _("output"),
    tooltip = _("linear: demosaiced and denoised DNG; cfa: denoised Bayer DNG in the raw's own layout, demosaiced by darktable"),
    selected = (opts.output_kind == "cfa") and 2 or 1,
    "linear", "cfa",
  }
  widgets.help = dt.new_widget("label") {
    label = _("more settings: preferences > lua options"),
  }
  dt.register_lib(MODULE, "nnraw", true, false,
    {[dt.gui.views.lighttable] = {"DT_UI_CONTAINER_PANEL_RIGHT_CENTER", 100}},
    dt.new_widget("box") {orientation = "vertical", widgets.strength, widgets.output_kind, widgets.button, widgets.help},
    nil, nil)
  module_installed = true
end

local function destroy()
  if dt.gui.libs[MODULE] then dt.gui.libs[MODULE].visible = false end
  dt.destroy_event(MODULE .. "_convert", "shortcut")
end

local function restart()
  register_shortcut()
  if dt.gui.libs[MODULE] then dt.gui.libs[MODULE].visible = true end
end

if has_gui then
  register_preferences()
  if dt.gui.current_view().id == "lighttable" then
    install_module()
  elseif not view_event_registered then
    dt.register_event(MODULE, "view-changed",
      function(event, old_view, new_view)
        if new_view.id == "lighttable" then install_module() end
      end)
    view_event_registered = true
  end
  register_shortcut()
  script_data.destroy = destroy
  script_data.restart = restart
  script_data.destroy_method = "hide"
  script_data.show = restart
end

script_data.convert_images = convert_images
script_data.shell_quote = shell_quote
script_data.save_module_settings = save_module_settings
script_data.convert_command = function(raw_path) return convert_command(settings(), raw_path, "out.json", "err.txt") end
script_data.json_decode = json_decode
script_data.program = function() return settings().executable end

return script_data
