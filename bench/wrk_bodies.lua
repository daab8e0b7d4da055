-- wrk script: POST form bodies read from a file, one per line. Each wrk thread takes every
-- n-th line, so single-use bodies (refresh tokens) are never sent twice across threads.
local threads = {}
local counter = 1

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  path = args[1]
  nthreads = tonumber(args[2])
  authorization = args[3]
  bodies = {}
  local i = 0
  for line in io.lines(path) do
    if i % nthreads == id then table.insert(bodies, line) end
    i = i + 1
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  wrk.headers["Authorization"] = authorization
end

function request()
  local body = bodies[counter]
  counter = counter + 1
  if counter > #bodies then counter = 1 end
  return wrk.format(nil, nil, nil, body)
end
