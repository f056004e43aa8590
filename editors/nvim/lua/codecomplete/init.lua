--- codecomplete: local code completion as ghost text, from the codecomplete language server.
local builtin = require("codecomplete.builtin")
local client = require("codecomplete.client")
local config = require("codecomplete.config")
local ghost = require("codecomplete.ghost")
local keymaps = require("codecomplete.keymaps")
local session = require("codecomplete.session")

local M = {}

---@type codecomplete.Config|nil
local cfg = nil
local use_builtin = false

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

local function format_status(result)
  if type(result) ~= "table" then
    return tostring(result)
  end
  local keys = vim.tbl_keys(result)
  table.sort(keys)
  local lines = {}
  for _, key in ipairs(keys) do
    local value = result[key]
    if type(value) == "table" then
      value = vim.inspect(value, { newline = " ", indent = "" })
    end
    lines[#lines + 1] = ("%s: %s"):format(key, tostring(value))
  end
  return table.concat(lines, "\n")
end

--- Ask the server for its `codecomplete/status`; with no callback, show it.
---@param callback fun(err: table|nil, result: table|nil)|nil
function M.status(callback)
  local c = client.get(vim.api.nvim_get_current_buf()) or client.get()
  if not c then
    local msg = "no codecomplete server is running (open a file of a configured filetype)"
    if callback then
      callback({ message = msg }, nil)
    else
      vim.notify("codecomplete: " .. msg, vim.log.levels.WARN)
    end
    return
  end
  client.status(c, callback or function(err, result)
    if err then
      vim.notify("codecomplete: status failed: " .. tostring(err.message), vim.log.levels.ERROR)
      return
    end
    local state = session.is_enabled() and "on" or "off"
    local msg = ("codecomplete (completions %s)\n%s"):format(state, format_status(result))
    vim.notify(msg, vim.log.levels.INFO)
  end)
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

  client.start(cfg, on_attach)
  local running = client.get()
  if running then
    client.send_settings(running, cfg.settings)
  end
end

return M
