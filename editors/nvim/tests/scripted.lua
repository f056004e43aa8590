--- Plugin behaviour that a real model cannot be steered into on cue (answers arriving late, ranges, partial
--- accepts), driven by an in-process scripted server (scripted_server.lua): it records every request and answers
--- only when the script says so. It negotiates utf-16 so range and position conversion is exercised.
--- Environment: CODECOMPLETE_TEST_OUT.
local here = vim.fs.dirname(debug.getinfo(1, "S").source:sub(2))
vim.opt.runtimepath:prepend(vim.fs.dirname(here))
local H = dofile(here .. "/harness.lua")
local obs = H.obs

local server, scripted_server = dofile(here .. "/scripted_server.lua").new()

local buf

local function nth_request(n)
  return H.wait_for(("request #%d"):format(n), 3000, function()
    return server.requests[n]
  end)
end

local function ghost_text()
  local g = H.ghost(buf)
  return g and g.text
end

local function wait_ghost(what)
  return H.wait_for(what, 3000, ghost_text)
end

local function wait_no_ghost(what)
  H.wait_for(what, 3000, function()
    return ghost_text() == nil
  end)
end

--- An InlineCompletionList with one item replacing (line, from)-(line, to), or inserted at the cursor.
local function answer(text, line, from, to)
  local range = line and {
    start = { line = line, character = from },
    ["end"] = { line = line, character = to },
  }
  return { items = { { insertText = text, range = range } } }
end

--- Leave insert mode, replace the buffer, put the cursor on (row, col) in normal mode.
local function reset(lines, row, col)
  H.type("<Esc>")
  H.wait_for("normal mode", 3000, function()
    return vim.api.nvim_get_mode().mode == "n"
  end)
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, lines)
  vim.api.nvim_win_set_cursor(0, { row + 1, col })
end

local function line(row)
  return vim.api.nvim_buf_get_lines(buf, row, row + 1, false)[1]
end

local function cursor()
  local c = vim.api.nvim_win_get_cursor(0)
  return { c[1] - 1, c[2] }
end

H.run(function()
  local codecomplete = require("codecomplete")
  local ok, err = pcall(codecomplete.setup, { bogus = true })
  obs.bad_option_error = not ok and err or nil
  ok, err = pcall(codecomplete.setup, { keymaps = { accept = 42 } })
  obs.bad_keymap_error = not ok and err or nil

  codecomplete.setup({
    cmd = scripted_server,
    debounce_ms = 30,
    prefer_builtin = false,
    settings = { maxTokens = 64, model = "tiny" },
  })
  vim.cmd.edit(vim.fn.tempname() .. ".py")
  buf = vim.api.nvim_get_current_buf()
  local client = H.wait_for("the client to attach", 5000, function()
    return vim.lsp.get_clients({ name = "codecomplete", bufnr = buf })[1]
  end)
  obs.offset_encoding = client.offset_encoding
  obs.init_options = server.init_params.initializationOptions
  obs.offered_encodings = server.init_params.capabilities.general.positionEncodings
  obs.client_inline_capability = server.init_params.capabilities.textDocument.inlineCompletion ~= nil
  -- The model is ready, and the plugin knows it: no request below is asked again for a model that was loading.
  local known
  codecomplete.status(function(_, result)
    known = result
  end)
  H.wait_for("the status", 3000, function()
    return known
  end)

  -- Typing while a request is in flight cancels it; its late answer is ignored; the new one is shown.
  reset({ "x = " }, 0, 3)
  H.type("aa")
  local first = nth_request(1)
  H.type("b")
  local second = nth_request(2)
  obs.stale = {
    first = { id = first.id, position = first.params.position, trigger = first.params.context.triggerKind },
    second_position = second.params.position,
    cancels = vim.deepcopy(server.cancels),
  }
  first.reply(nil, answer("STALE"))
  H.sleep(150)
  obs.stale.ghost_after_stale_answer = ghost_text() or vim.NIL
  second.reply(nil, answer("abcd + 1", 0, 4, 6))
  wait_ghost("the fresh answer")
  obs.stale.ghost = H.ghost(buf)

  -- Typing what the suggestion says keeps it (minus the typed part) without asking again.
  local n_before = #server.requests
  H.type("c")
  H.wait_for("the ghost to shrink", 3000, function()
    return ghost_text() == "d + 1"
  end)
  H.sleep(150)
  obs.type_through = { ghost = ghost_text(), new_requests = #server.requests - n_before }

  -- <Tab> accepts the rest.
  H.type("<Tab>")
  H.wait_for("the accepted line", 3000, function()
    return line(0) ~= "x = abc"
  end)
  obs.accept = { line = line(0), cursor = cursor(), ghost = ghost_text() or vim.NIL }
  obs.accept.asked_again = H.poll(1000, function()
    return #server.requests > n_before
  end) or false

  -- Word and line accepts, through a multi-line suggestion.
  reset({ "def f():", "    " }, 1, 3)
  H.type("Ar")
  local req = nth_request(#server.requests + 1)
  req.reply(nil, answer("return foo(bar)\n    qux", 1, 4, 5))
  wait_ghost("the multi-line suggestion")
  obs.partial = { ghost = H.ghost(buf), steps = {} }
  n_before = #server.requests
  for _, key in ipairs({ "<C-Right>", "<C-Right>", "<C-l>", "<C-l>" }) do
    local tick = vim.b[buf].changedtick
    H.type(key)
    H.wait_for("an edit from " .. key, 3000, function()
      return vim.b[buf].changedtick ~= tick
    end)
    H.sleep(50)
    table.insert(obs.partial.steps, {
      key = key,
      lines = vim.api.nvim_buf_get_lines(buf, 0, -1, false),
      cursor = cursor(),
      ghost = ghost_text() or vim.NIL,
      new_requests = #server.requests - n_before,
    })
  end

  -- A range in utf-16 units on a line with multi-byte characters, replacing the auto-closed ")" after the
  -- cursor.
  reset({ 's = "é😀" + f()' }, 0, #'s = "é😀" + f(')
  H.type("ix")
  req = nth_request(#server.requests + 1)
  local at = req.params.position.character -- utf-16 column of the cursor, as Neovim sent it
  req.reply(nil, answer("x, y)", 0, at - 1, at + 1))
  wait_ghost("the ranged suggestion")
  obs.utf16 = { position = req.params.position, line_at_request = line(0), ghost = H.ghost(buf) }
  H.type("<Tab>")
  H.wait_for("the ranged accept", 3000, function()
    return line(0) ~= 's = "é😀" + f(x)'
  end)
  obs.utf16.line = line(0)
  obs.utf16.cursor = cursor()

  -- Moving the cursor dismisses the suggestion, and cancels a pending request, whose answer is then ignored.
  reset({ "y = 1" }, 0, 4)
  H.type("A2")
  req = nth_request(#server.requests + 1)
  req.reply(nil, answer("34"))
  wait_ghost("a suggestion to move away from")
  H.type("<Left>")
  wait_no_ghost("the ghost to go on <Left>")
  H.type("5")
  req = nth_request(#server.requests + 1)
  H.type("<Left>")
  obs.move = { cancelled = H.poll(1000, function()
    return vim.tbl_contains(server.cancels, req.id)
  end) or false }
  H.type("<Right>") -- back where it was asked, same text: only the generation shows the answer is stale
  H.sleep(50)
  req.reply(nil, answer("late"))
  H.sleep(150)
  obs.move.ghost_after_late_answer = ghost_text() or vim.NIL

  -- The suggest key asks with triggerKind Invoked; the dismiss key hides without editing.
  reset({ "z = 0" }, 0, 4)
  H.type("A<M-\\>")
  req = nth_request(#server.requests + 1)
  obs.invoked = { trigger = req.params.context.triggerKind }
  req.reply(nil, { { insertText = " + 1" } }) -- a bare InlineCompletionItem[] answer
  wait_ghost("the invoked suggestion")
  local tick = vim.b[buf].changedtick
  H.type("<C-]>")
  wait_no_ghost("the ghost to go on <C-]>")
  obs.invoked.tick_unchanged = vim.b[buf].changedtick == tick
  obs.invoked.line = line(0)

  -- <C-c> leaves insert mode without InsertLeave; the suggestion goes all the same.
  H.type("<M-\\>")
  nth_request(#server.requests + 1).reply(nil, answer(" + 2"))
  wait_ghost("a suggestion to leave with <C-c>")
  H.type("<C-c>")
  H.wait_for("normal mode after <C-c>", 3000, function()
    return vim.api.nvim_get_mode().mode == "n"
  end)
  H.sleep(50)
  obs.ctrl_c_ghost = ghost_text() or vim.NIL
  H.type("A")

  -- Toggled off: no requests while typing.
  codecomplete.toggle(false)
  n_before = #server.requests
  H.type("9")
  H.sleep(200)
  obs.toggle = { requests_while_off = #server.requests - n_before }
  codecomplete.toggle(true)
  H.type("8")
  obs.toggle.asked_when_on = H.poll(1000, function()
    return #server.requests > n_before
  end) or false

  -- Keys with nothing to act on do what they normally do.
  reset({ "w = 1" }, 0, 0)
  vim.bo[buf].expandtab = false
  vim.bo[buf].softtabstop = 0
  H.type("i<C-Right>")
  H.wait_for("<C-Right> to move a word", 3000, function()
    return cursor()[2] > 0
  end)
  obs.plain_keys = { word_cursor = cursor() }
  H.type("<Esc>o<Tab>")
  H.wait_for("a tab on a new line", 3000, function()
    return line(1) == "\t"
  end)
  obs.plain_keys.lines = vim.api.nvim_buf_get_lines(buf, 0, -1, false)

  -- :CodecompleteStatus reports the server's answer; this one has none of the newer fields.
  H.type("<Esc>")
  vim.cmd("CodecompleteStatus")
  obs.status_message = H.wait_for("the status message", 3000, function()
    for _, n in ipairs(obs.notifications) do
      if n.msg:find("^codecomplete: ready") then
        return n.msg
      end
    end
  end)

  -- setup() again: the running server gets the new settings, no second server starts.
  codecomplete.setup({ cmd = scripted_server, prefer_builtin = false, settings = { maxTokens = 32 } })
  obs.reconfigured = {
    settings = server.changed_settings or vim.NIL,
    clients = #vim.lsp.get_clients({ name = "codecomplete" }),
  }
end, 30000)
