--- Buffer-local insert-mode keys. Each key does its job when there is something to act on and otherwise
--- behaves exactly as the key normally does, so <Tab> still indents when no suggestion is shown.
local M = {}

local DESCRIPTIONS = {
  accept = "codecomplete: accept suggestion",
  accept_word = "codecomplete: accept next word",
  accept_line = "codecomplete: accept next line",
  dismiss = "codecomplete: dismiss suggestion",
  suggest = "codecomplete: suggest now",
}

---@param bufnr integer
---@param keys codecomplete.Keymaps|false
---@param actions table<string, fun(bufnr: integer): boolean> returns false to fall back to the plain key;
---  keys without an action are left alone
function M.attach(bufnr, keys, actions)
  if not keys then
    return
  end
  for name, lhs in pairs(keys) do
    if lhs and actions[name] then
      local fallback = vim.keycode(lhs)
      vim.keymap.set("i", lhs, function()
        if not actions[name](bufnr) then
          vim.api.nvim_feedkeys(fallback, "ni", false) -- "n": not remapped, so no loop back into this map
        end
      end, { buffer = bufnr, desc = DESCRIPTIONS[name] })
    end
  end
end

---@param bufnr integer
---@param keys codecomplete.Keymaps|false
function M.detach(bufnr, keys)
  if not keys or not vim.api.nvim_buf_is_valid(bufnr) then
    return
  end
  for _, lhs in pairs(keys) do
    if lhs then
      pcall(vim.keymap.del, "i", lhs, { buffer = bufnr })
    end
  end
end

return M
