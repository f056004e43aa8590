--- The first keystroke after opening a file gets a suggestion, against a real server that has only just been
--- started: the keys are typed at once, before the server answered initialize or loaded its model, and nothing
--- else is typed or asked for by the test. Every inline request and its answer is recorded with its time.
--- Environment: CODECOMPLETE_TEST_CMD (JSON list), CODECOMPLETE_TEST_FILE, CODECOMPLETE_TEST_OUT,
--- CODECOMPLETE_TEST_TYPE (the keys), CODECOMPLETE_TEST_SETTINGS (JSON object).
local here = vim.fs.dirname(debug.getinfo(1, "S").source:sub(2))
vim.opt.runtimepath:prepend(vim.fs.dirname(here))
local H = dofile(here .. "/harness.lua")
local obs = H.obs

vim.lsp.set_log_level("debug") -- the log goes to the test's own directory; its tail is shown when a run fails

local t0 = vim.uv.hrtime()
local function ms()
  return (vim.uv.hrtime() - t0) / 1e6
end

-- Record the requests the plugin makes (session.lua calls the client module's function through the table).
obs.requests = {}
local client_mod = require("codecomplete.client")
local request_inline = client_mod.request_inline
client_mod.request_inline = function(client, bufnr, trigger_kind, handler)
  local entry = { sent_ms = ms(), trigger = trigger_kind }
  table.insert(obs.requests, entry)
  return request_inline(client, bufnr, trigger_kind, function(err, result)
    entry.answered_ms = ms()
    entry.error = err and err.message or nil
    local items = type(result) == "table" and (result.items or result) or {}
    entry.items = #items
    handler(err, result)
  end)
end

vim.api.nvim_create_autocmd("LspAttach", {
  callback = function()
    obs.attached_ms = obs.attached_ms or ms()
  end,
})

H.run(function()
  require("codecomplete").setup({
    cmd = vim.json.decode(os.getenv("CODECOMPLETE_TEST_CMD")),
    prefer_builtin = false,
    settings = vim.json.decode(os.getenv("CODECOMPLETE_TEST_SETTINGS")),
  })
  vim.cmd.edit(vim.fn.fnameescape(os.getenv("CODECOMPLETE_TEST_FILE")))
  local buf = vim.api.nvim_get_current_buf()
  obs.typed_ms = ms()
  H.type("GA" .. os.getenv("CODECOMPLETE_TEST_TYPE"))
  obs.ghost = H.wait_for("ghost text after the first keystrokes", 50000, function()
    return H.ghost(buf)
  end)
  obs.ghost_ms = ms()
  obs.at_ghost = H.snapshot(buf)
  local answer
  require("codecomplete").status(function(err, result)
    answer = { err = err, result = result }
  end)
  answer = H.wait_for("codecomplete/status", 10000, function()
    return answer
  end)
  obs.status = answer.result
end, 55000)
