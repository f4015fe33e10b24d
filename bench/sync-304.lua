-- wrk script: entitle's POST /agent/v1/sync on the 304 path (If-None-Match: the
-- device's current ETag). Same files as sync-200.lua.
local dir = os.getenv("ENTITLE_SYNC_DIR") or "target/bench-sync"

local function slurp(name)
  local file = assert(io.open(dir .. "/" .. name, "r"), "missing " .. dir .. "/" .. name)
  local text = file:read("*a")
  file:close()
  return (text:gsub("%s+$", ""))
end

wrk.method = "POST"
wrk.path = "/agent/v1/sync"
wrk.body = slurp("body.json")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. slurp("token")
wrk.headers["If-None-Match"] = slurp("etag")
