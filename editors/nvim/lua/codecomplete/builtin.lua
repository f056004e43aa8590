--- Neovim's own inline completion (0.12+: vim.lsp.inline_completion) requests, draws and accepts on its own;
--- this adapter only maps our keys onto it and adds word and line accepts through its `on_accept` hook.
local suggestion = require("codecomplete.suggestion")

local M = {}

function M.available()
  return vim.lsp.inline_completion ~= nil
end

---@param bufnr integer
---@param on boolean
function M.set_enabled(bufnr, on)
  vim.lsp.inline_completion.enable(on, { bufnr = bufnr })
end

--- An on_accept handler that inserts only the next word or line of the item.
local function accept_part(bufnr, unit)
  return function(item)
    if type(item.insert_text) ~= "string" then
      return
    end
    local pos = vim.api.nvim_win_get_cursor(0)
    local cursor = { pos[1] - 1, pos[2] }
    local range = item.range and {
      start = { item.range.start.row, item.range.start.col },
      finish = { item.range.end_.row, item.range.end_.col },
    }
    local s = suggestion.new(bufnr, item.insert_text, range, cursor)
    local rest = s and suggestion.remainder(bufnr, s, cursor)
    if rest and rest ~= "" then
      local after = suggestion.apply(bufnr, s, cursor, suggestion.chunk(rest, unit), rest)
      vim.api.nvim_win_set_cursor(0, { after[1] + 1, after[2] })
    end
  end
end

--- Key actions; each returns false when nothing was shown so the key falls back to its usual meaning.
M.actions = {
  accept = function(bufnr)
    return vim.lsp.inline_completion.get({ bufnr = bufnr })
  end,
  accept_word = function(bufnr)
    return vim.lsp.inline_completion.get({ bufnr = bufnr, on_accept = accept_part(bufnr, "word") })
  end,
  accept_line = function(bufnr)
    return vim.lsp.inline_completion.get({ bufnr = bufnr, on_accept = accept_part(bufnr, "line") })
  end,
  dismiss = function(bufnr)
    -- Accepting with a handler that inserts nothing hides the candidate through the public API.
    return vim.lsp.inline_completion.get({ bufnr = bufnr, on_accept = function() end })
  end,
}

return M
