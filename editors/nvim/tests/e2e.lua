--- End-to-end run against a real server: wait until it is ready, type in a Python buffer, see ghost text,
--- accept it with <Tab>, dismiss the next one with <Esc>, and check that <Tab> without a suggestion indents;
--- then :CodecompleteStatus and :checkhealth codecomplete (which runs the real `codecomplete doctor`).
--- Environment: CODECOMPLETE_TEST_CMD (JSON list), CODECOMPLETE_TEST_FILE, CODECOMPLETE_TEST_OUT,
--- CODECOMPLETE_TEST_TYPE (keys that trigger the first suggestion), CODECOMPLETE_TEST_SETTINGS (JSON object).
local here = vim.fs.dirname(debug.getinfo(1, "S").source:sub(2))
vim.opt.runtimepath:prepend(vim.fs.dirname(here))
local H = dofile(here .. "/harness.lua")
local obs = H.obs

--- One codecomplete/status answer, asking again when one is not back within 2 s: with --no-daemon the model
--- loads in the server's process, and llama.cpp's loader silences its stdout meanwhile, answers included.
local function status()
  for _ = 1, 20 do
    local answer
    require("codecomplete").status(function(err, result)
      answer = { err = err, result = result }
    end)
    answer = H.poll(2000, function()
      return answer
    end)
    if answer then
      return answer
    end
  end
  error("no answer to codecomplete/status", 0)
end

vim.lsp.set_log_level("debug") -- the log goes to the test's own directory; its tail is shown when a run fails

H.run(function()
  require("codecomplete").setup({
    cmd = vim.json.decode(os.getenv("CODECOMPLETE_TEST_CMD")),
    debounce_ms = 250,
    prefer_builtin = false, -- test our own implementation on every Neovim version
    settings = vim.json.decode(os.getenv("CODECOMPLETE_TEST_SETTINGS") or "{}"),
  })
  vim.cmd.edit(vim.fn.fnameescape(os.getenv("CODECOMPLETE_TEST_FILE")))
  local buf = vim.api.nvim_get_current_buf()
  local client = H.wait_for("the client to attach", 20000, function()
    return vim.lsp.get_clients({ name = "codecomplete", bufnr = buf })[1]
  end)
  obs.offset_encoding = client.offset_encoding

  local started = vim.uv.hrtime()
  obs.status = H.wait_for("the server to be ready", 45000, function()
    local s = status()
    if s.err then
      error("codecomplete/status failed: " .. vim.inspect(s.err), 0)
    end
    if s.result and s.result.state == "ready" then
      return s.result
    end
    H.sleep(200)
  end)
  obs.ready_ms = (vim.uv.hrtime() - started) / 1e6

  -- 1. Typing shows ghost text.
  H.type("GA" .. os.getenv("CODECOMPLETE_TEST_TYPE"))
  started = vim.uv.hrtime()
  obs.ghost1 = H.wait_for("ghost text after typing", 15000, function()
    return H.ghost(buf)
  end)
  obs.ghost1_ms = (vim.uv.hrtime() - started) / 1e6
  obs.before_accept = H.snapshot(buf)

  -- 2. <Tab> accepts it.
  H.type("<Tab>")
  H.wait_for("the buffer to change after <Tab>", 5000, function()
    return vim.b[buf].changedtick ~= obs.before_accept.tick
  end)
  obs.after_accept = H.snapshot(buf)

  -- 3. A new suggestion. Erasing the accepted text at once (within the debounce, so the request the accept
  -- would make is never sent) returns to the spot that had one; a small model may have nothing to say
  -- elsewhere. Should it have nothing there either, try a new line.
  obs.ghost2_typed = ""
  local erase = string.rep("<BS>", vim.fn.strchars(obs.ghost1.text))
  for _, attempt in ipairs({ { erase, 12000 }, { "<CR>", 10000 } }) do
    H.type(attempt[1])
    obs.ghost2_typed = obs.ghost2_typed .. attempt[1]
    obs.ghost2 = H.poll(attempt[2], function()
      return H.ghost(buf)
    end)
    if obs.ghost2 then
      break
    end
  end
  if not obs.ghost2 then
    error("no second suggestion after typing " .. obs.ghost2_typed, 0)
  end
  obs.before_esc = H.snapshot(buf)
  H.type("<Esc>")
  H.wait_for("normal mode after <Esc>", 5000, function()
    return vim.api.nvim_get_mode().mode == "n"
  end)
  H.sleep(300) -- let a stale answer arrive, if one were still on its way
  obs.after_esc = H.snapshot(buf)
  obs.after_esc.ghost = H.ghost(buf)

  -- 4. <Tab> with no suggestion is a plain <Tab>.
  vim.bo[buf].expandtab = false
  vim.bo[buf].softtabstop = 0
  vim.bo[buf].autoindent = false
  vim.bo[buf].indentexpr = ""
  local line_count = vim.api.nvim_buf_line_count(buf)
  H.type("Go<Tab>")
  H.wait_for("a tab on a new line", 5000, function()
    return vim.api.nvim_buf_line_count(buf) > line_count and vim.api.nvim_get_current_line() ~= ""
  end)
  obs.plain_tab = H.snapshot(buf)
  H.type("<Esc>")
  H.wait_for("normal mode", 5000, function()
    return vim.api.nvim_get_mode().mode == "n"
  end)

  -- 5. The status report and the health check, from this server.
  vim.cmd("CodecompleteStatus")
  obs.report = H.notification("^codecomplete: ready", 10000).msg
  obs.health = H.checkhealth()
end, 55000)
