--- Helpers for the headless test scripts: run a test body as a coroutine on Neovim's main loop (so typed
--- keys, timers and LSP messages are processed while it waits), record observations, write them as JSON and
--- quit.
local H = {}

H.obs = { notifications = {} }
H.errors_expected = false -- set by scripts that provoke error messages, so waiting does not stop at them

local out_path = assert(os.getenv("CODECOMPLETE_TEST_OUT"), "CODECOMPLETE_TEST_OUT is not set")
local resume
local done = false

local function now_ms()
  return (vim.uv or vim.loop).hrtime() / 1e6
end

---@param err string|nil
function H.finish(err)
  if done then
    return
  end
  done = true
  H.obs.error = err
  H.obs.errmsg = vim.v.errmsg
  local f = assert(io.open(out_path, "w"))
  f:write(vim.json.encode(H.obs))
  f:close()
  vim.cmd(err and "cquit 1" or "qall!")
end

--- Run `body` as a coroutine; fail the whole run after `timeout_ms`.
function H.run(body, timeout_ms)
  vim.o.showmode = false -- headless Neovim prints mode messages to stderr, which the tests keep clean
  vim.notify = function(msg, level)
    table.insert(H.obs.notifications, { msg = msg, level = level or vim.log.levels.INFO })
  end
  local co = coroutine.create(body)
  resume = function()
    local ok, err = coroutine.resume(co)
    if not ok then
      H.finish(debug.traceback(co, tostring(err)))
    elseif coroutine.status(co) == "dead" then
      H.finish(nil)
    end
  end
  vim.defer_fn(function()
    H.finish(("test script timed out after %d ms"):format(timeout_ms))
  end, timeout_ms)
  vim.schedule(resume)
end

--- Yield to the main loop for `ms` milliseconds.
function H.sleep(ms)
  vim.defer_fn(resume, ms)
  coroutine.yield()
end

--- Poll `cond` until it returns a truthy value, which is returned; raise after `timeout_ms`, or at once when
--- an error was notified.
function H.wait_for(what, timeout_ms, cond)
  local deadline = now_ms() + timeout_ms
  while true do
    for _, n in ipairs(H.errors_expected and {} or H.obs.notifications) do
      if n.level >= vim.log.levels.ERROR then -- e.g. the server quit: waiting longer cannot help
        error(("error while waiting for %s: %s"):format(what, n.msg), 0)
      end
    end
    local value = cond()
    if value then
      return value
    end
    if now_ms() > deadline then
      error(("timed out after %d ms waiting for %s"):format(timeout_ms, what), 0)
    end
    H.sleep(20)
  end
end

--- Like wait_for, but returns nil instead of raising on timeout.
function H.poll(timeout_ms, cond)
  local ok, value = pcall(H.wait_for, "", timeout_ms, cond)
  return ok and value or nil
end

--- The ghost text the plugin shows in `bufnr`, or nil.
function H.ghost(bufnr)
  local ns = require("codecomplete.ghost").ns
  local marks = vim.api.nvim_buf_get_extmarks(bufnr, ns, 0, -1, { details = true })
  if #marks == 0 then
    return nil
  end
  local d = marks[1][4]
  local first = {}
  for _, chunk in ipairs(d.virt_text or {}) do
    first[#first + 1] = chunk[1]
  end
  local lines = { table.concat(first) }
  local hl = d.virt_text and d.virt_text[1][2]
  for _, vline in ipairs(d.virt_lines or {}) do
    local parts = {}
    for _, chunk in ipairs(vline) do
      parts[#parts + 1] = chunk[1]
      hl = hl or chunk[2]
    end
    lines[#lines + 1] = table.concat(parts)
  end
  return {
    count = #marks,
    row = marks[1][2],
    col = marks[1][3],
    text = table.concat(lines, "\n"),
    pos = d.virt_text_pos,
    hl = hl,
  }
end

function H.snapshot(bufnr)
  local cursor = vim.api.nvim_win_get_cursor(0)
  return {
    lines = vim.api.nvim_buf_get_lines(bufnr, 0, -1, false),
    cursor = { cursor[1] - 1, cursor[2] },
    mode = vim.api.nvim_get_mode().mode,
    tick = vim.b[bufnr].changedtick,
  }
end

--- The lines of the `:checkhealth codecomplete` report; its tab is closed again.
function H.checkhealth()
  vim.cmd("silent checkhealth codecomplete") -- silent: "Running healthchecks..." would go to stderr
  local lines = vim.api.nvim_buf_get_lines(0, 0, -1, false)
  vim.cmd("bwipeout!")
  return lines
end

--- The first notification whose message matches the Lua pattern, waiting for it.
function H.notification(pattern, timeout_ms)
  return H.wait_for("a notification matching " .. pattern, timeout_ms or 3000, function()
    for _, n in ipairs(H.obs.notifications) do
      if n.msg:find(pattern) then
        return n
      end
    end
  end)
end

--- Type keys as a user would (processed by the main loop once the test body yields).
function H.type(keys)
  vim.api.nvim_input(keys)
end

return H
