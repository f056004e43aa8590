--- Options for require("codecomplete").setup(): defaults, merging and validation.
local M = {}

--- Filetypes whose grammars the server ships; other filetypes still get plain prefix/suffix completion
--- when listed here by the user.
local DEFAULT_FILETYPES = {
  "python", "javascript", "javascriptreact", "typescript", "typescriptreact", "go", "rust", "java",
  "c", "cpp", "lua", "sh", "bash",
}

---@class codecomplete.Keymaps
---@field accept string|false
---@field accept_word string|false
---@field accept_line string|false
---@field dismiss string|false
---@field suggest string|false

---@class codecomplete.Config
---@field cmd string[]|function command that runs the language server over stdio, or an RPC client factory
---  such as vim.lsp.rpc.connect(host, port)
---@field filetypes string[] buffers of these filetypes get completions
---@field debounce_ms integer wait this long after the last keystroke before asking the server
---@field keymaps codecomplete.Keymaps|false insert-mode keys; false disables one or all of them
---@field settings table server settings, sent as initializationOptions (camelCase keys)
---@field prefer_builtin boolean use vim.lsp.inline_completion where Neovim has it (0.12+)
---@field enabled boolean start with completions on (toggle with :CodecompleteToggle)
M.defaults = {
  cmd = { "codecomplete", "lsp" },
  filetypes = DEFAULT_FILETYPES,
  debounce_ms = 150,
  keymaps = {
    accept = "<Tab>",
    accept_word = "<C-Right>",
    accept_line = "<C-l>",
    dismiss = "<C-]>",
    suggest = "<M-\\>",
  },
  settings = {},
  prefer_builtin = true,
  enabled = true,
}

local function fail(msg)
  error("codecomplete: " .. msg, 0)
end

local function check_string_list(name, value)
  if type(value) ~= "table" or not vim.islist(value) or #value == 0 then
    fail(("%s must be a non-empty list of strings"):format(name))
  end
  for _, item in ipairs(value) do
    if type(item) ~= "string" then
      fail(("%s must be a non-empty list of strings, got an item %s"):format(name, vim.inspect(item)))
    end
  end
end

local function merge_keymaps(user)
  if user == false then
    return false
  end
  if type(user) ~= "table" then
    fail("keymaps must be a table or false")
  end
  local keymaps = vim.deepcopy(M.defaults.keymaps)
  for name, lhs in pairs(user) do
    if keymaps[name] == nil then
      fail(("unknown keymap %q (known: accept, accept_word, accept_line, dismiss, suggest)"):format(name))
    end
    if lhs ~= false and (type(lhs) ~= "string" or lhs == "") then
      fail(("keymaps.%s must be a key string or false"):format(name))
    end
    keymaps[name] = lhs
  end
  return keymaps
end

--- Merge user options over the defaults; lists replace, keymaps merge key by key.
---@param opts table|nil
---@return codecomplete.Config
function M.resolve(opts)
  opts = opts or {}
  if type(opts) ~= "table" then
    fail("setup() takes a table of options")
  end
  local cfg = vim.deepcopy(M.defaults)
  for key, value in pairs(opts) do
    if M.defaults[key] == nil then
      local known = vim.tbl_keys(M.defaults)
      table.sort(known)
      fail(("unknown option %q (known: %s)"):format(key, table.concat(known, ", ")))
    end
    cfg[key] = key == "keymaps" and merge_keymaps(value) or vim.deepcopy(value)
  end
  if type(cfg.cmd) ~= "function" then
    check_string_list("cmd", cfg.cmd)
  end
  check_string_list("filetypes", cfg.filetypes)
  if type(cfg.debounce_ms) ~= "number" or cfg.debounce_ms < 0 then
    fail("debounce_ms must be a number >= 0")
  end
  if type(cfg.settings) ~= "table" then
    fail("settings must be a table")
  end
  if type(cfg.prefer_builtin) ~= "boolean" or type(cfg.enabled) ~= "boolean" then
    fail("prefer_builtin and enabled must be booleans")
  end
  return cfg
end

return M
