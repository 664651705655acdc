-- Posts the JSON bodies listed one per line in $BODIES, cycling through them (one list per wrk thread).
local bodies = {}
for line in io.lines(os.getenv("BODIES")) do bodies[#bodies + 1] = line end
local i = math.random(#bodies)
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", os.getenv("TARGET_PATH"), {["Content-Type"] = "application/json"}, bodies[i])
end
