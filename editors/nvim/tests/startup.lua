--- A server that cannot start is an error message, once: a `cmd` that is not executable (nothing is started), and
--- a server process that exits before answering initialize. :checkhealth codecomplete names the missing command.
--- Environment: CODECOMPLETE_TEST_OUT.
local here = vim.fs.dirname(debug.getinfo(1, "S").source:sub(2))
vim.opt.runtimepath:prepend(vim.fs.dirname(here))
local H = dofile(here .. "/harness.lua")
local obs = H.obs
H.errors_expected = true

local function since(n)
  return vim.list_slice(obs.notifications, n + 1)
end

H.run(function()
  local codecomplete = require("codecomplete")
  local settings = { timeBudgetMs = 600000 }

  -- 1. A command that is not there: one error naming it and the fix, and no client, however often setup() runs.
  local missing = vim.fn.tempname() .. "/bin/codecomplete"
  obs.missing_path = missing
  codecomplete.setup({ cmd = { missing, "lsp" }, settings = settings })
  codecomplete.setup({ cmd = { missing, "lsp" }, settings = settings })
  vim.cmd.edit(vim.fn.tempname() .. ".py")
  H.sleep(300)
  obs.missing = {
    notifications = since(0),
    clients = #vim.lsp.get_clients({ name = "codecomplete" }),
    health = H.checkhealth(),
  }

  -- 2. A server that exits at once: one error, also when the next buffer starts (and loses) another one.
  local n = #obs.notifications
  local cmd = { "sh", "-c", "echo 'codecomplete: something is broken' >&2; exit 3" }
  codecomplete.setup({ cmd = cmd, settings = settings })
  vim.cmd.edit(vim.fn.tempname() .. ".py")
  H.notification("exited with code 3", 10000)
  H.notification("quit with exit code 3", 10000) -- Neovim's own warning, sent once the client is gone
  vim.cmd.edit(vim.fn.tempname() .. ".py")
  H.wait_for("the second server to go", 10000, function()
    local quits = 0
    for _, note in ipairs(since(n)) do
      quits = quits + (note.msg:find("quit with exit code 3", 1, true) and 1 or 0)
    end
    return quits >= 2 -- Neovim's own warning, one per server
  end)
  H.sleep(200)
  obs.exit = { notifications = since(n), clients = #vim.lsp.get_clients({ name = "codecomplete" }) }
end, 30000)
