--- The server's status in the plugin, against the scripted server (scripted_server.lua): the request answered
--- empty while the model loads is asked again once it is ready (polling a server that does not push while its
--- state is not known, on `codecomplete/statusChanged` from one that does), notices are shown once,
--- :CodecompleteStatus is a short report and :checkhealth codecomplete reads `codecomplete doctor` (a fake one on
--- $PATH, put there by the test).
--- Environment: CODECOMPLETE_TEST_OUT.
local here = vim.fs.dirname(debug.getinfo(1, "S").source:sub(2))
vim.opt.runtimepath:prepend(vim.fs.dirname(here))
local H = dofile(here .. "/harness.lua")
local obs = H.obs

local server, scripted_server = dofile(here .. "/scripted_server.lua").new()
local CHANGED = "codecomplete/statusChanged"
local LOADING_NOTICE = "no suggestion: the model was still loading; it is asked again once it is ready"
local function budget_notice(tokens)
  return ("no suggestion: the 2000 ms time budget ran out while reading the prompt (%d tokens); "
    .. "raise timeBudgetMs or lower tokenBudget"):format(tokens)
end

local buf

local function nth_request(n)
  return H.wait_for(("request #%d"):format(n), 3000, function()
    return server.requests[n]
  end)
end

local function next_request()
  return nth_request(#server.requests + 1)
end

local function ghost_text()
  local g = H.ghost(buf)
  return g and g.text
end

local function answer(text)
  return { items = { { insertText = text } } }
end

local EMPTY = { items = {} }

local function levels_of(pattern)
  local out = {}
  for _, n in ipairs(obs.notifications) do
    if n.msg:find(pattern) then
      out[#out + 1] = n.level
    end
  end
  return out
end

H.run(function()
  local codecomplete = require("codecomplete")
  -- An older server: a status without the newer fields, and no statusChanged.
  server.status = { state = "loading", model = "tiny-coder.gguf" }
  codecomplete.setup({
    cmd = scripted_server,
    debounce_ms = 30,
    prefer_builtin = false,
    settings = { timeBudgetMs = 600000 },
  })
  vim.cmd.edit(vim.fn.tempname() .. ".py")
  buf = vim.api.nvim_get_current_buf()
  H.wait_for("the client to attach", 5000, function()
    return vim.lsp.get_clients({ name = "codecomplete", bufnr = buf })[1]
  end)

  -- 1. No statusChanged: while a request is made before the model is known to be ready, the plugin asks for the
  -- status until it is, then asks for the suggestion again, without a keystroke.
  H.type("ix")
  local first = next_request()
  first.reply(nil, EMPTY)
  H.wait_for("two status polls", 5000, function()
    return server.status_calls >= 2
  end)
  obs.poll = { calls_while_loading = server.status_calls, requests_while_loading = #server.requests }
  server.status = { state = "ready", model = "tiny-coder.gguf" }
  local again = next_request()
  obs.poll.calls_until_ready = server.status_calls
  obs.poll.same_position = vim.deep_equal(again.params.position, first.params.position)
  obs.poll.trigger = again.params.context.triggerKind
  again.reply(nil, answer("yz = 1"))
  obs.poll.ghost = H.wait_for("the suggestion after the model is ready", 3000, ghost_text)
  H.sleep(700)
  obs.poll.calls_after_ready = server.status_calls - obs.poll.calls_until_ready
  obs.poll.requests = #server.requests

  -- 2. A server that pushes statusChanged (here: loading another model after a settings change): no polling,
  -- and "ready" asks again; the loading notice is information, shown once.
  H.type("<C-]>q")
  server.push(CHANGED, { state = "loading" })
  local loading = next_request()
  loading.reply(nil, EMPTY)
  server.push(CHANGED, { state = "loading", notice = LOADING_NOTICE, last_stop_reason = "loading" })
  H.sleep(700)
  obs.push = {
    calls = server.status_calls - obs.poll.calls_until_ready,
    requests_while_loading = #server.requests - obs.poll.requests,
  }
  server.push(CHANGED, { state = "ready", model_name = "tiny-coder", family = "starcoder", prefix_only = false })
  local after_push = next_request()
  obs.push.same_position = vim.deep_equal(after_push.params.position, loading.params.position)
  after_push.reply(nil, answer("r = 2"))
  obs.push.ghost = H.wait_for("the suggestion after statusChanged ready", 3000, ghost_text)

  -- 3. "ready" arriving while a request is in flight: that request was sent while the model loaded, so its answer
  -- is empty or lost (a server loading in its own process can lose what it writes meanwhile): it is replaced.
  H.type("<C-]>w")
  server.push(CHANGED, { state = "loading" })
  local in_flight = next_request()
  H.sleep(100)
  server.push(CHANGED, { state = "ready" })
  local replacement = next_request()
  obs.in_flight = {
    cancelled = vim.tbl_contains(server.cancels, in_flight.id),
    same_position = vim.deep_equal(replacement.params.position, in_flight.params.position),
  }
  replacement.reply(nil, answer("w = 3"))
  obs.in_flight.ghost = H.wait_for("the suggestion after the retry", 3000, ghost_text)
  in_flight.reply(nil, answer("LOST"))
  H.sleep(100)
  obs.in_flight.ghost_after_late_answer = ghost_text()

  -- 4. A time-budget notice warns once, however often it comes back with other numbers; "ready" while ready
  -- asks nothing; another notice warns again.
  H.type("<C-]>1")
  next_request().reply(nil, EMPTY)
  n_before = #server.requests
  server.push(CHANGED, { state = "ready", notice = budget_notice(1671), last_stop_reason = "time_budget",
    last_latency_ms = 2003.4 })
  H.sleep(150)
  obs.notices = { requests_after_ready_again = #server.requests - n_before }
  H.type("2")
  next_request().reply(nil, EMPTY)
  server.push(CHANGED, { state = "ready", notice = budget_notice(1702), last_stop_reason = "time_budget",
    last_latency_ms = 2001 })
  H.sleep(150)
  obs.notices.budget_levels = levels_of("time budget ran out while reading")
  server.push(CHANGED, { state = "ready", notice = "no suggestion: the 2000 ms time budget ran out while generating; "
    .. "raise timeBudgetMs", last_stop_reason = "time_budget" })
  H.notification("while generating")
  obs.notices.generating_levels = levels_of("while generating")
  obs.notices.loading_levels = levels_of("still loading")

  -- 5. :CodecompleteStatus: a few short lines from a status with every field, the effective settings included.
  H.type("<Esc>")
  local latencies = {}
  for i = 1, 200 do
    latencies[i] = 100 + i
  end
  server.status = {
    state = "ready",
    error = vim.NIL,
    model = "/home/someone/.local/share/codecomplete/models/a-rather-long-directory-name/tiny-coder-1.1b.Q4_K_M.gguf",
    model_name = "tiny-coder",
    family = "none",
    prefix_only = true,
    last_latency_ms = 2003.4,
    last_stop_reason = "time_budget",
    notice = budget_notice(1671),
    latencies_ms = latencies,
    stats = { requests = 12, cached = 3, cancelled = 4 },
    effective_settings = {
      model = "tiny-coder", format = "auto", maxTokens = 128, maxTokensSingleLine = 48, tokenBudget = 3000,
      timeBudgetMs = 600000, nCtx = 4096, mainGpu = 0, flashAttn = false, postprocess = true, reuse = true,
      kvShift = false, prefetch = true, enabled = true, backend = "local", fim = "auto", languages = {},
      repoContext = true, repoContextBudget = 1024, repoInclude = {}, repoExclude = { "*.min.js" },
    },
  }
  vim.cmd("CodecompleteStatus")
  obs.report = H.notification("^codecomplete: ready").msg
  local raw
  codecomplete.status(function(err, result)
    raw = { err = err, result = result }
  end)
  raw = H.wait_for("the raw status", 3000, function()
    return raw
  end)
  obs.raw_latencies = #raw.result.latencies_ms

  -- 6. :checkhealth codecomplete: cmd is a function here, so doctor is the `codecomplete` on $PATH.
  obs.health = H.checkhealth()
end, 30000)
