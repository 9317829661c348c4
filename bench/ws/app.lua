-- bench/ws/app.lua: the wsecho workload's app. GET /ws is a WebSocket that sends
-- every message back as it came (text or binary), the loop of docs/api.md's
-- example. bench/run.sh's nginx does the same with lua-resty-websocket and its
-- go peer with gorilla/websocket (bench/gows/); bench/wsload.c drives all three.
local app = require "tycho"

app.ws("/ws", function(ws)
    while true do
        local msg, kind = ws:receive()
        if not msg then return end
        ws:send(msg, kind == "binary")
    end
end)
