-- POST /webhooks/github: a constant signed body, a unique X-GitHub-Delivery per request (the hub
-- answers a repeated id 200 "duplicate" without publishing). The HMAC is computed once in Python
-- (bench/ingest.py) and passed in BENCH_SIGNATURE with the body in BENCH_BODY.
local here = string.match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
dofile(here .. "common.lua")

local path = os.getenv("BENCH_PATH") or "/webhooks/github"
local body = assert(os.getenv("BENCH_BODY"), "BENCH_BODY is not set")
local headers = {
  ["Content-Type"] = "application/json",
  ["X-GitHub-Event"] = "push",
  ["X-Hub-Signature-256"] = assert(os.getenv("BENCH_SIGNATURE"), "BENCH_SIGNATURE is not set"),
}
local prefix

function init(args)
  prefix = id_prefix()
end

function request()
  sent = sent + 1
  headers["X-GitHub-Delivery"] = prefix .. sent
  return wrk.format("POST", path, headers, body)
end
