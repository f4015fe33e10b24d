-- wrk script: entitle's POST /agent/v1/sync on the 200 path (no If-None-Match).
-- Reads the files `entitle bench --sync-target --out DIR` wrote; DIR comes from
-- the environment variable ENTITLE_SYNC_DIR.
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
