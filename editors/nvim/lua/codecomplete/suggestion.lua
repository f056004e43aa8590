--- A completion item anchored in the buffer, and the text operations on it (typing through, partial accept).
---
--- `text` replaces the buffer from `anchor` to the cursor, so what was typed since the anchor must be a
--- prefix of `text`; `tail` is the text right of the cursor that the item's range also covers (e.g. an
--- auto-closed bracket).
local M = {}

---@class codecomplete.Suggestion
---@field anchor integer[] {row, col}: 0-based row, byte column where `text` starts
---@field text string
---@field tail string

local function before(a, b)
  return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2])
end

--- Buffer text between two {row, col} positions (0-based, end exclusive), clamped to the buffer.
local function text_between(bufnr, from, to)
  local last = vim.api.nvim_buf_line_count(bufnr) - 1
  local to_row = math.min(to[1], last)
  local to_line = vim.api.nvim_buf_get_lines(bufnr, to_row, to_row + 1, false)[1] or ""
  local to_col = to_row < to[1] and #to_line or math.min(to[2], #to_line)
  if from[1] > to_row then
    return ""
  end
  return table.concat(vim.api.nvim_buf_get_text(bufnr, from[1], from[2], to_row, to_col, {}), "\n")
end

--- Position reached by writing `text` starting at `pos`.
local function advance(pos, text)
  local lines = vim.split(text, "\n", { plain = true })
  if #lines == 1 then
    return { pos[1], pos[2] + #text }
  end
  return { pos[1] + #lines - 1, #lines[#lines] }
end

--- Build a suggestion from an LSP InlineCompletionItem whose range is already in byte columns.
---@param bufnr integer
---@param insert_text string
---@param range {start: integer[], finish: integer[]}|nil byte positions; nil means "insert at the cursor"
---@param cursor integer[] {row, col}, 0-based
---@return codecomplete.Suggestion|nil nil when the item does not continue what is in the buffer
function M.new(bufnr, insert_text, range, cursor)
  local anchor, finish = cursor, cursor
  if range then
    anchor, finish = range.start, range.finish
  end
  if before(cursor, anchor) then
    return nil
  end
  if before(finish, cursor) then
    finish = cursor
  end
  local s = { anchor = anchor, text = insert_text, tail = text_between(bufnr, cursor, finish) }
  if not M.remainder(bufnr, s, cursor) then
    return nil
  end
  return s
end

--- What is left to insert at `cursor`, or nil when the buffer no longer agrees with the suggestion.
---@param bufnr integer
---@param s codecomplete.Suggestion
---@param cursor integer[] {row, col}, 0-based
---@return string|nil
function M.remainder(bufnr, s, cursor)
  if before(cursor, s.anchor) then
    return nil
  end
  local typed = text_between(bufnr, s.anchor, cursor)
  if s.text:sub(1, #typed) ~= typed then
    return nil
  end
  return s.text:sub(#typed + 1)
end

--- The next piece of `rest` to accept: "word" (spaces + a word or a run of punctuation, or a line break with
--- the next line's indent), "line" (the rest of this line, or the next line with its break) or "all".
---@param rest string
---@param unit "all"|"word"|"line"
---@return string
function M.chunk(rest, unit)
  if unit == "line" then
    return rest:match("^\n[^\n]*") or rest:match("^[^\n]+") or rest
  end
  if unit == "word" then
    return rest:match("^[ \t]*[%w_]+") or rest:match("^[ \t]*[^%w_%s]+") or rest:match("^[ \t]*\n[ \t]*")
      or rest
  end
  return rest
end

--- Insert `chunk` at the cursor; when it completes the suggestion, also replace the `tail` (if still there).
---@return integer[] cursor after the insertion, {row, col} 0-based
function M.apply(bufnr, s, cursor, chunk, rest)
  local finish = cursor
  if chunk == rest and s.tail ~= "" then
    local tail_end = advance(cursor, s.tail)
    if text_between(bufnr, cursor, tail_end) == s.tail then
      finish = tail_end
    end
  end
  local lines = vim.split(chunk, "\n", { plain = true })
  vim.api.nvim_buf_set_text(bufnr, cursor[1], cursor[2], finish[1], finish[2], lines)
  return advance(cursor, chunk)
end

--- What to draw for `rest`: lines of ghost text, without a same-line tail that the real buffer already shows.
---@return string[]
function M.display_lines(s, rest)
  local lines = vim.split(rest, "\n", { plain = true })
  if s.tail ~= "" and not s.tail:find("\n", 1, true) and #lines == 1 and vim.endswith(lines[1], s.tail) then
    lines[1] = lines[1]:sub(1, #lines[1] - #s.tail)
  end
  return lines
end

return M
