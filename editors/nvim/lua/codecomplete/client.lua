--- Starting the codecomplete language server and talking to it.
local M = {}

M.name = "codecomplete"
M.STATUS_METHOD = "codecomplete/status"
M.STATUS_CHANGED = "codecomplete/statusChanged"

local has_011 = vim.fn.has("nvim-0.11") == 1

--- Call a vim.lsp.Client method: methods take `self` from 0.11 on, plain fields before.
local function call(client, method, ...)
  if has_011 then
    return client[method](client, ...)
  end
  return client[method](...)
end

--- One server for every buffer and project: each server process loads the model, so never start two.
local function reuse_client(client, config)
  return client.name == config.name
end

---@class codecomplete.ClientHooks
---@field on_attach fun(bufnr: integer, client: vim.lsp.Client)
---@field on_status_changed fun(client_id: integer, params: table|nil) codecomplete/statusChanged
---@field on_exit fun(client_id: integer, code: integer, signal: integer, initialized: boolean)

--- Clients that got through initialize: an exit before that is a server that could not start.
local initialized = {}

---@param cfg codecomplete.Config
---@param hooks codecomplete.ClientHooks
local function lsp_config(cfg, hooks)
  return {
    name = M.name,
    cmd = cfg.cmd,
    filetypes = cfg.filetypes,
    root_markers = { ".git" },
    reuse_client = reuse_client,
    -- An empty Lua table would be sent as a JSON array.
    init_options = next(cfg.settings) and cfg.settings or nil,
    capabilities = { textDocument = { inlineCompletion = { dynamicRegistration = false } } },
    handlers = {
      [M.STATUS_CHANGED] = function(_, params, ctx)
        hooks.on_status_changed(ctx.client_id, params)
      end,
    },
    on_init = function(client)
      initialized[client.id] = true
    end,
    on_exit = function(code, signal, client_id)
      local was_initialized = initialized[client_id] == true
      initialized[client_id] = nil
      vim.schedule(function()
        hooks.on_exit(client_id, code, signal, was_initialized)
      end)
    end,
  }
end

--- What is wrong with `cmd` when its program cannot be run, or nil (also for a function: only Neovim can try it).
---@param cmd string[]|function
---@return string|nil
function M.cmd_missing(cmd)
  if type(cmd) ~= "table" or vim.fn.executable(cmd[1]) == 1 then
    return nil
  end
  local tried = cmd[1]
  return tried:find("/", 1, true) and ("%s is not an executable file"):format(tried)
    or ("%q is not on $PATH"):format(tried)
end

M.CMD_FIX = 'give its full path: require("codecomplete").setup({ cmd = { "/path/to/codecomplete", "lsp" } })'

--- The message for a `cmd` that cannot be run, or nil.
---@param cmd string[]|function
---@return string|nil
function M.cmd_problem(cmd)
  local missing = M.cmd_missing(cmd)
  return missing and ("cannot start the language server: %s. Install codecomplete so that it is on $PATH, or %s")
    :format(missing, M.CMD_FIX)
end

--- Stop starting the server for new buffers (after a setup() whose command cannot run).
function M.stop_enabling()
  pcall(vim.api.nvim_del_augroup_by_name, "codecomplete.client")
  if vim.lsp.enable and vim.lsp.config and vim.lsp.is_enabled and vim.lsp.is_enabled(M.name) then
    vim.lsp.enable(M.name, false)
  end
end

--- Start the server for matching buffers (vim.lsp.config/enable on 0.11+, vim.lsp.start before).
---@param cfg codecomplete.Config
---@param hooks codecomplete.ClientHooks
function M.start(cfg, hooks)
  local group = vim.api.nvim_create_augroup("codecomplete.client", { clear = true })
  vim.api.nvim_create_autocmd("LspAttach", {
    group = group,
    callback = function(args)
      local client = vim.lsp.get_client_by_id(args.data.client_id)
      if client and client.name == M.name then
        hooks.on_attach(args.buf, client)
      end
    end,
  })
  local config = lsp_config(cfg, hooks)
  if vim.lsp.config and vim.lsp.enable then
    vim.lsp.config[M.name] = config -- assignment replaces any earlier setup() instead of merging into it
    vim.lsp.enable(M.name)
    return
  end
  local function start(bufnr)
    if vim.bo[bufnr].buftype ~= "" then
      return
    end
    local buf_config = vim.tbl_extend("force", config, { root_dir = vim.fs.root(bufnr, config.root_markers) })
    vim.lsp.start(buf_config, { bufnr = bufnr, reuse_client = reuse_client })
  end
  vim.api.nvim_create_autocmd("FileType", {
    group = group,
    pattern = cfg.filetypes,
    callback = function(args)
      start(args.buf)
    end,
  })
  for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(bufnr) and vim.tbl_contains(cfg.filetypes, vim.bo[bufnr].filetype) then
      start(bufnr)
    end
  end
end

---@param bufnr integer|nil a buffer the client must be attached to; nil for any
---@return vim.lsp.Client|nil
function M.get(bufnr)
  return vim.lsp.get_clients({ name = M.name, bufnr = bufnr })[1]
end

--- Ask for inline completions at the cursor of the current window.
---@param client vim.lsp.Client
---@param bufnr integer
---@param trigger_kind integer 1 Invoked, 2 Automatic
---@param handler fun(err: table|nil, result: any)
---@return integer|nil request id
function M.request_inline(client, bufnr, trigger_kind, handler)
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  params.context = { triggerKind = trigger_kind }
  local ok, id = call(client, "request", "textDocument/inlineCompletion", params, handler, bufnr)
  return ok and id or nil
end

---@param client vim.lsp.Client
---@param id integer
function M.cancel(client, id)
  call(client, "cancel_request", id)
end

---@param client vim.lsp.Client
---@param handler fun(err: table|nil, result: any)
function M.status(client, handler)
  call(client, "request", M.STATUS_METHOD, vim.empty_dict(), handler)
end

--- The status, waiting for it (for :checkhealth, which reports synchronously).
---@param client vim.lsp.Client
---@param timeout_ms integer
---@return table|nil result, string|nil error
function M.status_sync(client, timeout_ms)
  local answer, err = call(client, "request_sync", M.STATUS_METHOD, vim.empty_dict(), timeout_ms)
  if not answer then
    return nil, err or "no answer"
  end
  if answer.err then
    return nil, tostring(answer.err.message or answer.err)
  end
  return answer.result, nil
end

--- Send changed settings to a running server (the ones at start went as initializationOptions).
---@param client vim.lsp.Client
---@param settings table
function M.send_settings(client, settings)
  local params = { settings = next(settings) and settings or vim.empty_dict() }
  call(client, "notify", "workspace/didChangeConfiguration", params)
end

--- Byte column of an LSP position, whose `character` counts in the client's negotiated encoding.
---@param bufnr integer
---@param pos {line: integer, character: integer}
---@param encoding string
---@return integer
function M.byte_col(bufnr, pos, encoding)
  local line = vim.api.nvim_buf_get_lines(bufnr, pos.line, pos.line + 1, false)[1] or ""
  if encoding == "utf-8" then
    return math.min(pos.character, #line)
  end
  local ok, col
  if has_011 then
    ok, col = pcall(vim.str_byteindex, line, encoding, pos.character, false)
  else
    ok, col = pcall(vim.str_byteindex, line, pos.character, encoding == "utf-16")
  end
  return ok and col or #line
end

return M
