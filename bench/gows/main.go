// bench/gows: the Go peer of `make bench`'s wsecho workload, built by
// bench/run.sh from Debian's packaged Go sources (GO111MODULE=off,
// GOPATH=/usr/share/gocode; no network): net/http with gorilla/websocket
// (golang-github-gorilla-websocket-dev), the most used Go WebSocket library.
// One route, the same as bench/ws/app.lua:
//
//	GET /ws  a WebSocket that sends every message back as it came (text or
//	         binary), one goroutine per connection (gorilla's model)
//
// Environment: PORT (listens on 127.0.0.1:PORT). bench/run.sh runs it with
// GOMAXPROCS=1, pinned to one CPU, as Tycho's single worker is.
package main

import (
	"log"
	"net/http"
	"os"

	"github.com/gorilla/websocket"
)

// buffers as gorilla's defaults (4 KiB each); any origin, the load generator sends none
var upgrader = websocket.Upgrader{
	ReadBufferSize:  4096,
	WriteBufferSize: 4096,
	CheckOrigin:     func(*http.Request) bool { return true },
}

func echo(w http.ResponseWriter, r *http.Request) {
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade has answered 400 already
	}
	defer c.Close()
	c.SetReadLimit(1 << 20) // as Tycho's default max_message
	for {
		kind, msg, err := c.ReadMessage()
		if err != nil {
			return // closed (gorilla answers the client's close frame itself)
		}
		if err := c.WriteMessage(kind, msg); err != nil {
			return
		}
	}
}

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		log.Fatal("PORT is not set")
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", echo)
	log.Fatal(http.ListenAndServe("127.0.0.1:"+port, mux))
}
