--- Per-buffer completion state: debounced requests, cancelling stale ones, showing, accepting, dismissing.
---
--- Every request gets a generation number; anything that makes the pending answer useless (typing, moving,
--- leaving insert mode) bumps the generation and cancels the request, and answers from older generations
--- are dropped, so a slow model never paints a suggestion for text that is no longer there.
local client_mod = require("codecomplete.client")
local ghost = require("codecomplete.ghost")
local suggestion = require("codecomplete.suggestion")

local M = {}

M.TRIGGER_INVOKED = 1
M.TRIGGER_AUTOMATIC = 2

local CANCELLED = { [-32800] = true, [-32801] = true } -- RequestCancelled, ContentModified

--- Called when a request is sent and when it is answered with nothing (set by init: the model may still be loading,
--- and the plugin must learn when it is ready to ask again).
---@type fun(client: vim.lsp.Client)
M.on_request = function(_) end

---@class codecomplete.BufState
---@field client_id integer
---@field gen integer
---@field request_id integer|nil
---@field timer uv.uv_timer_t
---@field sugg codecomplete.Suggestion|nil
---@field tick integer|nil changedtick last seen by the change handler
---@field cursor integer[]|nil cursor last seen by the change handler

---@type table<integer, codecomplete.BufState>
local states = {}
local debounce_ms = 150
local enabled = true
local last_error = nil

local function cursor_pos()
  local pos = vim.api.nvim_win_get_cursor(0)
  return { pos[1] - 1, pos[2] }
end

local function same_pos(a, b)
  return a ~= nil and b ~= nil and a[1] == b[1] and a[2] == b[2]
end

local function in_insert_mode()
  return vim.api.nvim_get_mode().mode:sub(1, 1) == "i"
end

--- Forget the pending request: cancel it on the server and make its answer stale.
local function cancel_inflight(st)
  st.gen = st.gen + 1
  st.timer:stop()
  if st.request_id then
    local client = vim.lsp.get_client_by_id(st.client_id)
    if client then
      client_mod.cancel(client, st.request_id)
    end
    st.request_id = nil
  end
end

local function hide(bufnr, st)
  st.sugg = nil
  ghost.clear(bufnr)
end

--- Draw what is left of the suggestion at the cursor; false when nothing is left or it no longer fits.
local function render(bufnr, st)
  if not st.sugg or vim.api.nvim_get_current_buf() ~= bufnr then
    return false
  end
  local cursor = cursor_pos()
  local rest = suggestion.remainder(bufnr, st.sugg, cursor)
  local lines = rest and suggestion.display_lines(st.sugg, rest)
  if not lines or (#lines == 1 and lines[1] == "") then
    hide(bufnr, st)
    return false
  end
  ghost.show(bufnr, cursor[1], cursor[2], lines)
  return true
end

local function report_error(err)
  if CANCELLED[err.code] or err.message == last_error then
    return
  end
  last_error = err.message
  vim.notify("codecomplete: " .. tostring(err.message), vim.log.levels.WARN)
end

local function to_range(bufnr, range, encoding)
  if not range then
    return nil
  end
  return {
    start = { range.start.line, client_mod.byte_col(bufnr, range.start, encoding) },
    finish = { range["end"].line, client_mod.byte_col(bufnr, range["end"], encoding) },
  }
end

local function items_of(result)
  return type(result) == "table" and (result.items or result) or {}
end

local function on_result(bufnr, st, client, result)
  local items = items_of(result)
  local cursor = cursor_pos()
  for _, item in ipairs(items) do
    if type(item.insertText) == "string" then
      local range = to_range(bufnr, item.range, client.offset_encoding)
      st.sugg = suggestion.new(bufnr, item.insertText, range, cursor)
      if render(bufnr, st) then
        return
      end
    end
  end
  hide(bufnr, st)
end

--- Send a request now, replacing any pending one.
---@param bufnr integer
---@param trigger_kind integer
function M.request(bufnr, trigger_kind)
  local st = states[bufnr]
  if not st or not enabled or vim.api.nvim_get_current_buf() ~= bufnr or not in_insert_mode() then
    return
  end
  local client = vim.lsp.get_client_by_id(st.client_id)
  if not client then
    return
  end
  cancel_inflight(st)
  local gen, tick, cursor = st.gen, vim.b[bufnr].changedtick, cursor_pos()
  st.request_id = client_mod.request_inline(client, bufnr, trigger_kind, function(err, result)
    if st.gen ~= gen then
      return -- a newer request, an edit or a dismissal made this answer stale
    end
    st.request_id = nil
    if err then
      report_error(err)
      return
    end
    if #items_of(result) == 0 then
      M.on_request(client)
    end
    local current = vim.api.nvim_get_current_buf() == bufnr and in_insert_mode()
    if current and vim.b[bufnr].changedtick == tick and same_pos(cursor_pos(), cursor) then
      on_result(bufnr, st, client, result)
    end
  end)
  if st.request_id then
    M.on_request(client)
  end
end

--- The model just became ready: ask again at the cursor unless a suggestion is shown or about to be asked for.
--- What was asked while it loaded was answered empty; a request still in flight was sent before the server said
--- "ready", so it is replaced too (its answer may be empty, or lost: a server loading the model in its own
--- process can lose what it writes meanwhile).
---@param bufnr integer
function M.retry(bufnr)
  local st = states[bufnr]
  if not st or st.sugg or not enabled or vim.api.nvim_get_current_buf() ~= bufnr or not in_insert_mode() then
    return
  end
  if st.request_id or not st.timer:is_active() then
    M.request(bufnr, M.TRIGGER_AUTOMATIC) -- cancels the one in flight
  end
end

local function schedule_request(bufnr, st)
  st.timer:stop()
  st.timer:start(debounce_ms, 0, vim.schedule_wrap(function()
    M.request(bufnr, M.TRIGGER_AUTOMATIC)
  end))
end

--- Text changed in insert mode: keep a suggestion the user is typing through, otherwise ask again.
local function on_text_changed(bufnr)
  local st = states[bufnr]
  st.tick, st.cursor = vim.b[bufnr].changedtick, cursor_pos()
  if not enabled or render(bufnr, st) then
    return
  end
  cancel_inflight(st)
  schedule_request(bufnr, st)
end

--- The cursor moved without an edit (arrows, mouse): whatever was pending or shown is for another place.
local function on_cursor_moved(bufnr)
  local st = states[bufnr]
  if vim.b[bufnr].changedtick == st.tick and not same_pos(cursor_pos(), st.cursor) then
    M.dismiss(bufnr)
  end
end

---@param bufnr integer
---@return boolean
function M.has_suggestion(bufnr)
  local st = states[bufnr]
  return st ~= nil and st.sugg ~= nil
end

--- Hide the suggestion and forget any pending request.
---@param bufnr integer
function M.dismiss(bufnr)
  local st = states[bufnr]
  if st then
    cancel_inflight(st)
    hide(bufnr, st)
  end
end

--- Insert the suggestion, or its next word or line, and move the cursor after it.
---@param bufnr integer
---@param unit "all"|"word"|"line"
---@return boolean accepted false when there was nothing to accept
function M.accept(bufnr, unit)
  local st = states[bufnr]
  if not st or not st.sugg then
    return false
  end
  local cursor = cursor_pos()
  local rest = suggestion.remainder(bufnr, st.sugg, cursor)
  if not rest or rest == "" then
    hide(bufnr, st)
    return false
  end
  local sugg, chunk = st.sugg, suggestion.chunk(rest, unit)
  if chunk == rest then
    hide(bufnr, st) -- fully accepted; the edit below then asks for the next suggestion
  end
  local pos = suggestion.apply(bufnr, sugg, cursor, chunk, rest)
  vim.api.nvim_win_set_cursor(0, { pos[1] + 1, pos[2] })
  return true
end

local function add_autocmds(bufnr)
  local group = vim.api.nvim_create_augroup("codecomplete.buf." .. bufnr, { clear = true })
  local function on(events, fn)
    vim.api.nvim_create_autocmd(events, { group = group, buffer = bufnr, callback = function()
      fn(bufnr)
    end })
  end
  on({ "TextChangedI", "TextChangedP" }, on_text_changed)
  on("CursorMovedI", on_cursor_moved)
  on("BufLeave", M.dismiss)
  on("ModeChanged", function() -- leaving insert mode, also with <C-c>, which skips InsertLeave
    if not in_insert_mode() then
      M.dismiss(bufnr)
    end
  end)
end

---@param bufnr integer
---@param client vim.lsp.Client
function M.attach(bufnr, client)
  local st = states[bufnr]
  if st then
    st.client_id = client.id
  else
    st = { client_id = client.id, gen = 0, timer = assert((vim.uv or vim.loop).new_timer()) }
    states[bufnr] = st
    add_autocmds(bufnr)
  end
  -- Keys typed before the server answered initialize made no request: ask now for where they left the cursor.
  if enabled and not st.sugg and vim.api.nvim_get_current_buf() == bufnr and in_insert_mode() then
    schedule_request(bufnr, st)
  end
end

---@param bufnr integer
function M.detach(bufnr)
  local st = states[bufnr]
  if not st then
    return
  end
  M.dismiss(bufnr)
  st.timer:close()
  states[bufnr] = nil
  pcall(vim.api.nvim_del_augroup_by_name, "codecomplete.buf." .. bufnr)
end

--- Turn automatic and invoked completions on or off for every buffer.
---@param on boolean
function M.set_enabled(on)
  enabled = on
  if not on then
    for bufnr in pairs(states) do
      M.dismiss(bufnr)
    end
  end
end

function M.is_enabled()
  return enabled
end

---@param ms integer
function M.set_debounce(ms)
  debounce_ms = ms
end

return M
