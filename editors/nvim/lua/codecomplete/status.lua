--- The server's status as the plugin knows it, and the report :CodecompleteStatus shows.
---
--- The server pushes `codecomplete/statusChanged` when its state changes (loading → ready, → error) and after
--- requests. A request made while the model loads is answered empty at once (or its answer is lost), so the
--- move to "ready" is when to ask again. A server that does not push (older versions) is asked for
--- `codecomplete/status` instead, but only while a request is made before its state is known to be ready, and
--- only until the state settles.
local client_mod = require("codecomplete.client")
local notify = require("codecomplete.notify")

local M = {}

M.WIDTH = 100 -- longest report line: a notify window or the message area, not a dump

local POLL_MS = 500
local POLL_LIMIT_MS = 10 * 60 * 1000 -- a large model from a slow disk; past that, the next request polls again
-- A status answer not back by then is taken as lost and asked again: a server whose model loads in its own process
-- can lose what it writes meanwhile (llama.cpp's loader silences the process's stdout while it runs).
local POLL_LOST_MS = 2000

-- Fields that a status object clears by sending null, which arrives as a missing key.
local NULLABLE = { "error", "notice", "last_latency_ms", "last_stop_reason" }

local uv = vim.uv or vim.loop

---@class codecomplete.KnownStatus
---@field state string|nil nil until the server said
---@field fields table the latest status fields, merged
---@field pushes boolean the server sends statusChanged, so there is no need to poll
---@field poll uv.uv_timer_t|nil
---@field poll_started number|nil
---@field asked_at number|nil when the poll's status request in flight was sent
---@field no_status boolean|nil the server has no codecomplete/status: never poll it

---@type table<integer, codecomplete.KnownStatus>
local known = {}
local on_ready = function(_) end

local function entry(client_id)
  local k = known[client_id]
  if not k then
    k = { fields = {}, pushes = false }
    known[client_id] = k
  end
  return k
end

local function settled(state)
  return state ~= nil and state ~= "idle" and state ~= "loading"
end

local function stop_poll(k)
  if k.poll then
    k.poll:stop()
    k.poll:close()
    k.poll = nil
  end
end

--- Called with the client id when the server becomes ready (from any other state, or from not known).
---@param fn fun(client_id: integer)
function M.set_on_ready(fn)
  on_ready = fn
end

local function show_notice(fields)
  local notice = fields.notice
  if type(notice) ~= "string" or notice == "" then
    return
  end
  -- A model still loading needs no action: the plugin asks again once it is ready. Anything else (a time
  -- budget too small for the prompt) is the user's to fix, and names the setting.
  local loading = fields.last_stop_reason == "loading" or not settled(fields.state)
  -- The same notice comes back with other numbers (milliseconds, tokens) on the next request: once is enough.
  local key = "notice:" .. (notice:gsub("%d+", "#"))
  notify.once(notice, loading and vim.log.levels.INFO or vim.log.levels.WARN, key)
end

--- Take in a status object: the params of `codecomplete/statusChanged` or the answer to `codecomplete/status`.
---@param client_id integer
---@param fields table
---@param pushed boolean|nil it came as a notification
---@param quiet boolean|nil show no notice (the caller shows the whole status)
function M.update(client_id, fields, pushed, quiet)
  if type(fields) ~= "table" then
    return
  end
  local k = entry(client_id)
  k.pushes = k.pushes or pushed == true
  for _, key in ipairs(NULLABLE) do
    k.fields[key] = nil
  end
  for key, value in pairs(fields) do
    k.fields[key] = value
  end
  local before = k.state
  k.state = type(fields.state) == "string" and fields.state or before
  if not quiet then
    show_notice(fields)
  end
  if settled(k.state) or k.pushes then
    stop_poll(k)
  end
  if k.state == "ready" and before ~= "ready" then
    on_ready(client_id)
  end
end

--- The `codecomplete/statusChanged` handler. Params without a status mean "ask for it".
---@param client_id integer
---@param params table|nil
function M.on_changed(client_id, params)
  if type(params) == "table" and params.state ~= nil then
    M.update(client_id, params, true)
    return
  end
  entry(client_id).pushes = true
  local c = vim.lsp.get_client_by_id(client_id)
  if c then
    client_mod.status(c, function(err, result)
      if not err then
        M.update(client_id, result, true)
      end
    end)
  end
end

--- A request is on its way, or came back with nothing. If the model may still be loading and the server does not
--- say when it is ready, ask it until it is.
---@param client vim.lsp.Client
function M.expect_ready(client)
  local k = entry(client.id)
  if k.pushes or k.poll or k.no_status or settled(k.state) then
    return
  end
  local client_id = client.id
  local timer = assert(uv.new_timer())
  k.poll, k.poll_started, k.asked_at = timer, uv.now(), nil
  local function tick()
    local c = vim.lsp.get_client_by_id(client_id)
    if k.poll ~= timer then
      return
    end
    if not c or uv.now() - k.poll_started > POLL_LIMIT_MS then
      stop_poll(k)
      return
    end
    if k.asked_at and uv.now() - k.asked_at < POLL_LOST_MS then
      return -- the last one is still on its way
    end
    k.asked_at = uv.now()
    client_mod.status(c, function(err, result)
      if k.poll ~= timer then
        return
      end
      k.asked_at = nil
      if err or type(result) ~= "table" then
        k.no_status = err ~= nil and err.code == -32601 -- MethodNotFound: nothing to wait for, ever
        stop_poll(k)
        return
      end
      M.update(client_id, result, false) -- stops the polling once the state settles
    end)
  end
  timer:start(0, POLL_MS, vim.schedule_wrap(tick)) -- at once: the model may be ready by now
end

--- Settings changed: a server that does not push may now be loading another model, unseen.
---@param client_id integer
function M.settings_changed(client_id)
  local k = known[client_id]
  if k and not k.pushes then
    k.state = nil
  end
end

--- The client is gone.
---@param client_id integer
function M.forget(client_id)
  local k = known[client_id]
  if k then
    stop_poll(k)
    known[client_id] = nil
  end
end

--- The latest status fields seen for a client (from notifications, polls and status answers).
---@param client_id integer
---@return table
function M.last(client_id)
  return vim.deepcopy(entry(client_id).fields)
end

-- The report --------------------------------------------------------------------------------------------------

local function width_of(s)
  return vim.fn.strchars(s)
end

--- Break `words` into lines of at most `width` characters, the first starting with `head`, the rest indented.
local function wrap(head, words, width)
  local indent = "  "
  local lines, cur, empty = {}, head, head == ""
  for _, word in ipairs(words) do
    local candidate = empty and (cur .. word) or (cur .. " " .. word)
    if width_of(candidate) <= width or empty then
      cur, empty = candidate, false
    else
      lines[#lines + 1] = cur
      cur = indent .. word
    end
    while width_of(cur) > width do -- one word longer than a line: cut it
      lines[#lines + 1] = vim.fn.strcharpart(cur, 0, width)
      cur = indent .. vim.fn.strcharpart(cur, width)
    end
  end
  lines[#lines + 1] = cur
  return lines
end

local function words(text)
  return vim.split(text, "%s+", { trimempty = true })
end

local function add(lines, more)
  vim.list_extend(lines, more)
end

local function shorten_left(text, max)
  if width_of(text) <= max then
    return text
  end
  return "…" .. vim.fn.strcharpart(text, width_of(text) - max + 1)
end

local STATE_WORDS = {
  idle = "starting",
  loading = "loading the model",
  ready = "ready",
  error = "error",
  disabled = "disabled (the server's enabled setting is false)",
}

local STOP_WORDS = {
  eot = "the model ended its text",
  eos = "the model ended its text",
  time_budget = "the time budget ran out",
  block_end = "the end of the block",
  single_line = "the end of the line",
  line_due = "a line end (a pause mid-line is short)",
  max_tokens = "the token cap",
  loading = "the model was still loading",
}

local function value_text(value)
  if type(value) == "string" then
    return '"' .. value .. '"'
  elseif type(value) == "table" then
    return vim.inspect(value, { newline = " ", indent = "" })
  elseif value == vim.NIL then
    return "null"
  end
  return tostring(value)
end

--- `key = value` items, sorted, as words for `wrap`: an item stays on one line unless it is longer than one.
local function settings_words(settings, width)
  local keys = vim.tbl_keys(settings)
  table.sort(keys)
  local out = {}
  for i, key in ipairs(keys) do
    local item = ("%s = %s%s"):format(key, value_text(settings[key]), i < #keys and "," or "")
    if width_of(item) <= width - 2 then
      out[#out + 1] = item
    else
      vim.list_extend(out, words(item))
    end
  end
  return out
end

local function mode_line(s)
  local prefix_only = s.prefix_only
  if prefix_only == nil and type(s.family) == "string" then
    prefix_only = s.family == "none"
  end
  if prefix_only == true then
    return "mode: prefix only, no fill-in-the-middle: the code after the cursor is not seen"
  elseif prefix_only == false then
    local family = type(s.family) == "string" and s.family or "unknown"
    return ("mode: fill-in-the-middle (%s tokens): the code after the cursor is seen too"):format(family)
  elseif not settled(s.state) then
    return "mode: known once the model is loaded"
  end
end

local function last_request_line(s)
  local latency, stop = s.last_latency_ms, s.last_stop_reason
  if type(latency) ~= "number" and type(stop) ~= "string" then
    return "last request: none yet"
  end
  local parts = {}
  if type(latency) == "number" then
    parts[#parts + 1] = ("%d ms"):format(math.floor(latency + 0.5))
  end
  if type(stop) == "string" then
    local why = STOP_WORDS[stop]
    parts[#parts + 1] = why and ("stopped: %s (%s)"):format(stop, why) or ("stopped: %s"):format(stop)
  end
  return "last request: " .. table.concat(parts, ", ")
end

--- The :CodecompleteStatus report: a few lines of at most M.WIDTH characters.
---@param s table the status object (the answer to codecomplete/status)
---@param opts {enabled: boolean, sent_settings: table|nil}
---@return string[]
function M.report(s, opts)
  local width = M.WIDTH
  local lines = {}
  local state = type(s.state) == "string" and s.state or "unknown"
  add(lines, wrap("", words(("codecomplete: %s; completions %s"):format(
    STATE_WORDS[state] or state, opts.enabled and "on" or "off")), width))

  local path = type(s.model) == "string" and s.model or nil
  local name = type(s.model_name) == "string" and s.model_name or (path and vim.fs.basename(path))
  if name then
    lines[#lines + 1] = shorten_left("model: " .. name, width)
  end
  if path and path ~= name then
    lines[#lines + 1] = "file: " .. shorten_left(path, width - #"file: ")
  end
  local mode = mode_line(s)
  if mode then
    add(lines, wrap("", words(mode), width))
  end
  lines[#lines + 1] = last_request_line(s)
  if type(s.notice) == "string" and s.notice ~= "" then
    add(lines, wrap("notice:", words(s.notice), width))
  end
  if type(s.error) == "string" and s.error ~= "" then
    add(lines, wrap("error:", words(s.error), width))
  end

  if type(s.effective_settings) == "table" then
    add(lines, wrap("settings:", settings_words(s.effective_settings, width), width))
  else
    -- An older server does not say which settings its requests use; what this editor sent is the best there is.
    local sent = opts.sent_settings or {}
    local head = "settings sent (the server does not report the ones in use):"
    if next(sent) then
      add(lines, wrap(head, settings_words(sent, width), width))
    else
      add(lines, wrap(head, words("none, so the server's config file and defaults"), width))
    end
  end
  return lines
end

return M
