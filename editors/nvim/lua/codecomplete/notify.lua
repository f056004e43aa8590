--- Messages to the user, each shown once: a broken setup or a recurring server notice must not pop up again on
--- every buffer or keystroke.
local M = {}

local shown = {}

--- Show `msg` (prefixed with "codecomplete: ") unless a message with the same key was shown before.
---@param msg string
---@param level integer vim.log.levels.*
---@param key string|nil what counts as "the same message"; defaults to the text itself
---@return boolean shown
function M.once(msg, level, key)
  key = key or msg
  if shown[key] then
    return false
  end
  shown[key] = true
  vim.notify("codecomplete: " .. msg, level)
  return true
end

return M
