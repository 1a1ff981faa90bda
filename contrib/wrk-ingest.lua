-- wrk load for `vodhook serve`: POSTs the documented NewFileUpload sample
-- with a new FileId on every request, so that every request is a new event
-- (docs/benchmarks.md, "With wrk").
--
--   wrk -t2 -c64 -d10s --latency -s contrib/wrk-ingest.lua http://127.0.0.1:8080/
--
-- Run it from the repository root, or set WRK_BODY to the sample's path.
-- FileIds are "8", the start time in seconds, the wrk thread and a counter:
-- a second run against the same store sends new events too.

local path = os.getenv("WRK_BODY") or "tests/fixtures/samples/v3-NewFileUpload.json"
local file = assert(io.open(path, "rb"), "cannot open " .. path .. " (set WRK_BODY)")
local template = file:read("*a")
file:close()

-- The sample's FileId (also its Vid); every occurrence is replaced.
local sample_id = "5285890784273533167"
assert(template:find(sample_id, 1, true), path .. " does not hold FileId " .. sample_id)

local started = os.time()
local threads = 0

function setup(thread)
   thread:set("thread_number", threads)
   threads = threads + 1
end

local prefix
local counter = 0

function init(args)
   prefix = string.format("8%d%02d", started, thread_number)
end

function request()
   counter = counter + 1
   local body = template:gsub(sample_id, string.format("%s%09d", prefix, counter))
   return wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, body)
end

-- Non-2xx answers are counted by wrk ("Non-2xx or 3xx responses"); a
-- refused or lost event shows there.
