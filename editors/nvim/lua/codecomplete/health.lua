--- :checkhealth codecomplete — the server command, the plugin's options, the client of the buffer it was run from,
--- and `codecomplete doctor` (the installation as the server sees it: llama.cpp, model, grammars, daemon).
local M = {}

local DOCTOR_TIMEOUT_MS = 30000 -- doctor opens the model vocabulary-only (under a second); a cold disk is slower
local STATUS_TIMEOUT_MS = 5000

--- The buffer :checkhealth was run from: by the time checks run, the report's own buffer is current, in a new
--- tab (the default), a float, or the window of an empty buffer.
local function origin_buf()
  local cur = vim.api.nvim_get_current_buf()
  if vim.bo[cur].buftype == "" and not vim.api.nvim_buf_get_name(cur):match("^health://") then
    return cur
  end
  local tab = vim.fn.tabpagenr("#")
  if tab > 0 and tab ~= vim.fn.tabpagenr() then
    return vim.fn.tabpagebuflist(tab)[vim.fn.tabpagewinnr(tab)]
  end
  local win = vim.fn.win_getid(vim.fn.winnr("#"))
  if win ~= 0 and win ~= vim.api.nvim_get_current_win() then
    return vim.api.nvim_win_get_buf(win)
  end
  local alt = vim.fn.bufnr("#")
  return alt > 0 and alt or cur
end

local function buf_label(bufnr)
  local name = vim.api.nvim_buf_get_name(bufnr)
  return name ~= "" and vim.fn.fnamemodify(name, ":~:.") or ("[buffer %d]"):format(bufnr)
end

local function inspect(value)
  return vim.inspect(value, { newline = " ", indent = "" })
end

--- The doctor command next to the server command: `codecomplete lsp --no-daemon` → `codecomplete doctor`.
---@return string[]|nil
local function doctor_cmd(cmd)
  if type(cmd) == "table" and vim.fn.executable(cmd[1]) == 1 then
    local argv = {}
    for _, arg in ipairs(cmd) do
      if arg == "lsp" then
        break
      end
      argv[#argv + 1] = arg
    end
    if #argv == #cmd then -- no "lsp" argument: a wrapper script, assumed to pass its arguments on
      argv = { cmd[1] }
    end
    argv[#argv + 1] = "doctor"
    return argv
  end
  if vim.fn.executable("codecomplete") == 1 then -- an RPC connection, or a cmd that cannot run: the one on $PATH
    return { vim.fn.exepath("codecomplete"), "doctor" }
  end
end

local function check_command(h, cfg)
  h.start("codecomplete: server command")
  local cmd = cfg and cfg.cmd or require("codecomplete.config").defaults.cmd
  if type(cmd) == "function" then
    h.info("cmd is a function (an RPC connection such as vim.lsp.rpc.connect): no executable to check")
    return
  end
  local exe = cmd[1]
  if vim.fn.executable(exe) == 1 then
    local path = vim.fn.exepath(exe)
    h.ok(path == exe and ("found: %s"):format(path) or ("`%s` found: %s"):format(exe, path))
    h.info("cmd = " .. inspect(cmd))
  else
    local client_mod = require("codecomplete.client")
    h.error("cannot start the language server: " .. client_mod.cmd_missing(cmd), {
      "install codecomplete so that `codecomplete` is on $PATH (e.g. the bin/ of the virtualenv it is in)",
      client_mod.CMD_FIX,
    })
  end
end

local function check_config(h, cfg)
  h.start("codecomplete: options")
  if not cfg then
    h.warn("setup() has not been called: no server starts", { 'require("codecomplete").setup({})' })
    return
  end
  local codecomplete = require("codecomplete")
  h.ok("setup() called")
  h.info("filetypes: " .. table.concat(cfg.filetypes, ", "))
  h.info(("debounce_ms = %d, enabled = %s, prefer_builtin = %s"):format(
    cfg.debounce_ms, tostring(cfg.enabled), tostring(cfg.prefer_builtin)))
  h.info(codecomplete.uses_builtin() and "suggestions drawn by Neovim's vim.lsp.inline_completion"
    or "suggestions drawn by the plugin")
  h.info("keymaps: " .. (cfg.keymaps and inspect(cfg.keymaps) or "none (keymaps = false)"))
  h.info("settings sent to the server: " .. (next(cfg.settings) and inspect(cfg.settings)
    or "none (the server's config file and defaults)"))
end

local function check_client(h, cfg)
  h.start("codecomplete: language server")
  local client_mod = require("codecomplete.client")
  local bufnr = origin_buf()
  local c = client_mod.get(bufnr)
  if not c then
    local running = client_mod.get()
    local ft = vim.bo[bufnr].filetype
    local advice = {}
    if cfg and not vim.tbl_contains(cfg.filetypes, ft) then
      advice[#advice + 1] = ("filetype %q is not in `filetypes`"):format(ft)
    end
    if running then
      h.warn(("the server runs (client %d) but is not attached to %s"):format(running.id, buf_label(bufnr)), advice)
    else
      advice[#advice + 1] = "open a file of a configured filetype; :LspLog shows why a server did not start"
      h.warn(("no codecomplete server is attached to %s"):format(buf_label(bufnr)), advice)
    end
    if not running then
      return
    end
    c = running
  else
    h.ok(("attached to %s (client %d, %s)"):format(buf_label(bufnr), c.id, c.offset_encoding))
  end
  local s, err = client_mod.status_sync(c, STATUS_TIMEOUT_MS)
  if not s then
    h.warn("codecomplete/status: " .. tostring(err))
    return
  end
  local name = s.model_name or s.model or "?"
  if s.state == "ready" then
    h.ok(("server ready, model %s"):format(name))
  elseif s.state == "error" then
    h.error(("server error: %s"):format(tostring(s.error)))
  elseif s.state == "disabled" then
    h.warn("server disabled (its `enabled` setting is false)")
  else
    h.info(("server %s"):format(tostring(s.state)))
  end
  if type(s.notice) == "string" then
    h.warn(s.notice)
  end
end

local VERDICTS = { ok = "ok", warn = "warn", fail = "error", error = "error" }

--- One line of doctor's report: "  ok    name   detail" → ("ok", "name: detail").
local function parse_doctor_line(line)
  line = line:gsub("\27%[[%d;]*m", "") -- colours, should a terminal-like environment have kept them
  local word, rest = line:match("^%s*(%a+)%s+(.-)%s*$")
  local verdict = word and VERDICTS[word]
  if not verdict then
    return nil, line
  end
  local name, detail = rest:match("^(.-)%s%s+(.*)$") -- the name column is padded with two or more spaces
  return verdict, name and (name .. ": " .. detail) or rest
end

local function check_doctor(h, cfg)
  h.start("codecomplete: codecomplete doctor")
  local argv = doctor_cmd(cfg and cfg.cmd or require("codecomplete.config").defaults.cmd)
  if not argv then
    h.error("cannot run `codecomplete doctor`: no codecomplete executable (see the server command above)")
    return
  end
  h.info("$ " .. table.concat(argv, " "))
  local ok, result = pcall(function()
    return vim.system(argv, { text = true, timeout = DOCTOR_TIMEOUT_MS }):wait()
  end)
  if not ok then
    h.error("could not run it: " .. tostring(result))
    return
  end
  if result.signal ~= 0 and result.code == 124 then
    h.error(("no answer within %d s"):format(DOCTOR_TIMEOUT_MS / 1000))
    return
  end
  local verdicts = 0
  for _, line in ipairs(vim.split(result.stdout or "", "\n", { trimempty = true })) do
    local verdict, text = parse_doctor_line(line)
    if verdict then
      verdicts = verdicts + 1
      h[verdict](text)
    elseif vim.trim(text) ~= "" then
      h.info(vim.trim(text)) -- the title and the summary line
    end
  end
  if verdicts == 0 or (result.code ~= 0 and (result.stderr or "") ~= "") then
    local stderr = vim.trim(result.stderr or "")
    h.error(("exit code %d%s"):format(result.code, stderr ~= "" and (": " .. stderr:sub(-800)) or ""))
  end
end

function M.check()
  local h = vim.health
  local cfg = require("codecomplete").config()
  check_command(h, cfg)
  check_config(h, cfg)
  check_client(h, cfg)
  check_doctor(h, cfg)
end

return M
