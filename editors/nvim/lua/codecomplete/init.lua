--- codecomplete: local code completion as ghost text, from the codecomplete language server.
local builtin = require("codecomplete.builtin")
local client = require("codecomplete.client")
local config = require("codecomplete.config")
local ghost = require("codecomplete.ghost")
local keymaps = require("codecomplete.keymaps")
local notify = require("codecomplete.notify")
local session = require("codecomplete.session")
local status = require("codecomplete.status")

local M = {}

---@type codecomplete.Config|nil
local cfg = nil
local use_builtin = false
local start_problem = nil -- why setup() did not start the server

local own_actions = {
  accept = function(bufnr)
    return session.accept(bufnr, "all")
  end,
  accept_word = function(bufnr)
    return session.accept(bufnr, "word")
  end,
  accept_line = function(bufnr)
    return session.accept(bufnr, "line")
  end,
  dismiss = function(bufnr)
    if not session.has_suggestion(bufnr) then
      return false
    end
    session.dismiss(bufnr)
    return true
  end,
  suggest = function(bufnr)
    session.request(bufnr, session.TRIGGER_INVOKED)
    return true
  end,
}

local function attached_buffers()
  local c = client.get()
  return c and vim.tbl_keys(c.attached_buffers) or {}
end

local function on_attach(bufnr, c)
  if use_builtin then
    builtin.set_enabled(bufnr, session.is_enabled())
  else
    session.attach(bufnr, c)
  end
  keymaps.attach(bufnr, cfg.keymaps, use_builtin and builtin.actions or own_actions)
  vim.api.nvim_create_autocmd("LspDetach", {
    group = vim.api.nvim_create_augroup("codecomplete.attach." .. bufnr, { clear = true }),
    buffer = bufnr,
    callback = function(args)
      if args.data.client_id == c.id then
        keymaps.detach(bufnr, cfg.keymaps)
        session.detach(bufnr)
        return true -- one-shot
      end
    end,
  })
end

--- A server that exits before answering initialize could not start (a broken install, a bad option). Neovim keeps
--- its stderr in the log and warns of the exit code only; say what to do, once.
local function on_exit(client_id, code, signal, was_initialized)
  status.forget(client_id)
  if was_initialized or (code == 0 and signal == 0) then
    return
  end
  local cmd = cfg and type(cfg.cmd) == "table" and table.concat(cfg.cmd, " ") or "the RPC connection"
  local why = code ~= 0 and ("exited with code %d"):format(code) or ("was killed by signal %d"):format(signal)
  local msg = ("the language server %s before it started (cmd: %s). Run that command in a terminal to see why, "
    .. "or :checkhealth codecomplete; its output is in :LspLog"):format(why, cmd)
  notify.once(msg, vim.log.levels.ERROR)
end

--- The model became ready: the request answered empty while it loaded is not lost, ask again where the cursor is.
local function on_ready(client_id)
  if use_builtin then
    return -- Neovim's own inline completion asks on its next trigger
  end
  local bufnr = vim.api.nvim_get_current_buf()
  local c = vim.lsp.get_client_by_id(client_id)
  if c and c.attached_buffers[bufnr] then
    session.retry(bufnr)
  end
end

--- Ask the server for its `codecomplete/status`; with no callback, show it as a short report.
---@param callback fun(err: table|nil, result: table|nil)|nil receives the raw status object
function M.status(callback)
  local c = client.get(vim.api.nvim_get_current_buf()) or client.get()
  if not c then
    local msg = start_problem or "no codecomplete server is running (open a file of a configured filetype)"
    if callback then
      callback({ message = msg }, nil)
    else
      vim.notify("codecomplete: " .. msg, start_problem and vim.log.levels.ERROR or vim.log.levels.WARN)
    end
    return
  end
  local client_id = c.id
  client.status(c, function(err, result)
    if not err and type(result) == "table" then
      status.update(client_id, result, false, callback == nil) -- the report shows its notice
    end
    if callback then
      callback(err, result)
      return
    end
    if err or type(result) ~= "table" then
      local why = err and tostring(err.message) or "no status object"
      vim.notify("codecomplete: status failed: " .. why, vim.log.levels.ERROR)
      return
    end
    -- An older server's answer has no notice; the last notification's is the one to keep showing.
    local shown = vim.deepcopy(result)
    if shown.notice == nil then
      shown.notice = status.last(client_id).notice
    end
    local lines = status.report(shown, { enabled = session.is_enabled(), sent_settings = cfg and cfg.settings })
    vim.notify(table.concat(lines, "\n"), vim.log.levels.INFO)
  end)
end

--- The options setup() resolved (nil before setup()), for :checkhealth.
---@return codecomplete.Config|nil
function M.config()
  return cfg
end

--- Whether suggestions are drawn by Neovim's vim.lsp.inline_completion rather than by the plugin.
function M.uses_builtin()
  return use_builtin
end

--- Turn completions on or off in every buffer.
---@param on boolean|nil nil flips the current state
function M.toggle(on)
  if on == nil then
    on = not session.is_enabled()
  end
  session.set_enabled(on)
  if use_builtin then
    for _, bufnr in ipairs(attached_buffers()) do
      builtin.set_enabled(bufnr, on)
    end
  end
  vim.notify("codecomplete: completions " .. (on and "on" or "off"), vim.log.levels.INFO)
end

--- Configure the plugin and start the server for matching buffers. Calling it again applies the new options;
--- a server already running gets the new settings through workspace/didChangeConfiguration.
---@param opts table|nil see README.md
function M.setup(opts)
  cfg = config.resolve(opts)
  use_builtin = cfg.prefer_builtin and builtin.available()
  session.set_debounce(cfg.debounce_ms)
  session.set_enabled(cfg.enabled)

  ghost.define_highlight()
  local group = vim.api.nvim_create_augroup("codecomplete", { clear = true })
  vim.api.nvim_create_autocmd("ColorScheme", { group = group, callback = ghost.define_highlight })

  vim.api.nvim_create_user_command("CodecompleteStatus", function()
    M.status()
  end, { desc = "Show the codecomplete server status" })
  vim.api.nvim_create_user_command("CodecompleteToggle", function()
    M.toggle()
  end, { desc = "Turn codecomplete suggestions on or off" })
  if not use_builtin then
    vim.api.nvim_create_user_command("CodecompleteSuggest", function()
      session.request(vim.api.nvim_get_current_buf(), session.TRIGGER_INVOKED)
    end, { desc = "Ask for a suggestion now (from insert mode: <Cmd>CodecompleteSuggest<CR>)" })
  end

  -- Neovim would skip a command it cannot run without a word outside its log: say it here, and start nothing.
  start_problem = client.cmd_problem(cfg.cmd)
  if start_problem then
    notify.once(start_problem, vim.log.levels.ERROR)
    client.stop_enabling()
    return
  end
  status.set_on_ready(on_ready)
  session.on_request = status.expect_ready
  client.start(cfg, {
    on_attach = on_attach,
    on_status_changed = status.on_changed,
    on_exit = on_exit,
  })
  local running = client.get()
  if running then
    client.send_settings(running, cfg.settings)
    status.settings_changed(running.id)
  end
end

return M
