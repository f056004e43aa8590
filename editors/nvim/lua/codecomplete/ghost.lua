--- Ghost text: the suggestion drawn with extmarks, its first line inline at the cursor, the rest as virtual
--- lines below.
local M = {}

M.ns = vim.api.nvim_create_namespace("codecomplete")
M.hl = "CodecompleteGhost"

local MARK_ID = 1 -- one mark per buffer, updated in place so redraws do not flicker
local has_inline = vim.fn.has("nvim-0.10") == 1

--- Link the highlight group to Comment unless the user or the colour scheme defined it.
function M.define_highlight()
  vim.api.nvim_set_hl(0, M.hl, { link = "Comment", default = true })
end

--- Virtual text does not expand tabs the way the buffer does.
local function expand_tabs(bufnr, s)
  return (s:gsub("\t", string.rep(" ", vim.bo[bufnr].tabstop)))
end

---@param bufnr integer
---@param row integer 0-based
---@param col integer byte column
---@param lines string[] ghost text; lines[1] continues the cursor line
function M.show(bufnr, row, col, lines)
  local opts = { id = MARK_ID, hl_mode = "combine" }
  if lines[1] ~= "" then
    opts.virt_text = { { expand_tabs(bufnr, lines[1]), M.hl } }
    -- Inline text pushes the rest of the line aside; before 0.10 only end-of-line text exists.
    opts.virt_text_pos = has_inline and "inline" or "eol"
  end
  if #lines > 1 then
    opts.virt_lines = {}
    for i = 2, #lines do
      opts.virt_lines[#opts.virt_lines + 1] = { { expand_tabs(bufnr, lines[i]), M.hl } }
    end
  end
  vim.api.nvim_buf_set_extmark(bufnr, M.ns, row, col, opts)
end

---@param bufnr integer
function M.clear(bufnr)
  if vim.api.nvim_buf_is_valid(bufnr) then
    vim.api.nvim_buf_clear_namespace(bufnr, M.ns, 0, -1)
  end
end

return M
