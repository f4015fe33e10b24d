-- wrk script: Unleash Edge's GET /api/frontend with the context of entitle's
-- bench device as query parameters. EDGE_TOKEN is the frontend token;
-- EDGE_ETAG, when set, is sent as If-None-Match (Edge's 304 path).
wrk.method = "GET"
wrk.path = os.getenv("EDGE_PATH")
wrk.headers["Authorization"] = os.getenv("EDGE_TOKEN")
local etag = os.getenv("EDGE_ETAG")
if etag ~= nil and etag ~= "" then
  wrk.headers["If-None-Match"] = etag
end
