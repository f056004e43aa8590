--- An in-process language server for the scripted tests (a vim.lsp.rpc.PublicClient): it records every
--- request and answers inline completions only when the script says so. It negotiates utf-16 so range and
--- position conversion is exercised. `codecomplete/status` answers with `server.status`; `server.push` sends a
--- notification (e.g. `codecomplete/statusChanged`) to the client, as the real server does.
local M = {}

---@return table server, fun(dispatchers: table): table cmd for setup({ cmd = ... })
function M.new()
  local server = {
    requests = {}, -- textDocument/inlineCompletion, each with a reply(err, result)
    cancels = {},
    status_calls = 0,
    status = { state = "ready", model = "scripted" },
  }
  local dispatchers

  --- Send a notification to the client (scheduled, as a message from a pipe would be).
  function server.push(method, params)
    vim.schedule(function()
      dispatchers.notification(method, params)
    end)
  end

  local function cmd(d)
    dispatchers = d
    local next_id, closing = 0, false
    local rpc = {}
    function rpc.request(method, params, callback, notify_reply)
      next_id = next_id + 1
      local id = next_id
      local function reply(err, result)
        vim.schedule(function()
          if notify_reply then
            notify_reply(id)
          end
          callback(err, result)
        end)
      end
      if method == "initialize" then
        server.init_params = params
        reply(nil, { capabilities = {
          positionEncoding = "utf-16",
          textDocumentSync = 1,
          inlineCompletionProvider = true,
        } })
      elseif method == "textDocument/inlineCompletion" then
        table.insert(server.requests, { id = id, params = params, reply = reply })
      elseif method == "codecomplete/status" then
        server.status_calls = server.status_calls + 1
        reply(nil, vim.deepcopy(server.status))
      else
        reply(nil, vim.NIL)
      end
      return true, id
    end
    function rpc.notify(method, params)
      if method == "$/cancelRequest" then
        table.insert(server.cancels, params.id)
      elseif method == "workspace/didChangeConfiguration" then
        server.changed_settings = params.settings
      elseif method == "exit" then
        closing = true
        dispatchers.on_exit(0, 0)
      end
      return true
    end
    function rpc.is_closing()
      return closing
    end
    function rpc.terminate()
      closing = true
    end
    return rpc
  end

  return server, cmd
end

return M
