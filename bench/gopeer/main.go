// bench/gopeer: the Go peer of `make bench`'s pgquery and redisget workloads,
// built by bench/run.sh from Debian's packaged Go sources (GO111MODULE=off,
// GOPATH=/usr/share/gocode; no network): fasthttp for HTTP, pgx v4's pgxpool
// for PostgreSQL, redigo for Redis. One HTTP server, the same routes and
// answers as bench/data/app.lua:
//
//	GET /db     the TechEmpower "single query" test: a random id 1..10000
//	            picked here, SELECT id, randomnumber FROM world WHERE id = $1,
//	            answered as {"id":N,"randomNumber":M} (application/json)
//	GET /cache  one Redis GET of the key bench:cache, its value as the body
//	            (text/plain)
//
// Environment: PORT (listens on 127.0.0.1:PORT), DATABASE_URL, REDIS_URL
// (either may be empty: its route then answers 500), POOL (connections at
// most per pool, default 16). bench/run.sh runs it with GOMAXPROCS=1, pinned
// to one CPU, as Tycho's single worker is.
package main

import (
	"context"
	"encoding/json"
	"log"
	"math/rand"
	"os"
	"strconv"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/jackc/pgx/v4/pgxpool"
	"github.com/valyala/fasthttp"
)

type world struct {
	ID           int32 `json:"id"`
	RandomNumber int32 `json:"randomNumber"`
}

const worldQuery = "SELECT id, randomnumber FROM world WHERE id = $1"
const cacheKey = "bench:cache"

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		log.Fatal("PORT is not set")
	}
	pool := 16
	if s := os.Getenv("POOL"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			log.Fatalf("POOL: bad value %q", s)
		}
		pool = n
	}

	var pg *pgxpool.Pool
	if url := os.Getenv("DATABASE_URL"); url != "" {
		cfg, err := pgxpool.ParseConfig(url)
		if err != nil {
			log.Fatalf("DATABASE_URL: %v", err)
		}
		cfg.MaxConns = int32(pool)
		cfg.MinConns = 0
		// pgx's default: each statement prepared once per connection and cached
		pg, err = pgxpool.ConnectConfig(context.Background(), cfg)
		if err != nil {
			log.Fatalf("postgres: %v", err)
		}
	}

	var rp *redis.Pool
	if url := os.Getenv("REDIS_URL"); url != "" {
		rp = &redis.Pool{
			MaxIdle:     pool,
			MaxActive:   pool,
			Wait:        true, // a caller waits for a free connection, as Tycho's pool queues
			IdleTimeout: 60 * time.Second,
			Dial:        func() (redis.Conn, error) { return redis.DialURL(url) },
		}
	}

	handler := func(ctx *fasthttp.RequestCtx) {
		switch string(ctx.Path()) {
		case "/db":
			if pg == nil {
				ctx.Error("no DATABASE_URL", fasthttp.StatusInternalServerError)
				return
			}
			var w world
			id := rand.Intn(10000) + 1
			if err := pg.QueryRow(context.Background(), worldQuery, id).Scan(&w.ID, &w.RandomNumber); err != nil {
				ctx.Error(err.Error(), fasthttp.StatusServiceUnavailable)
				return
			}
			body, _ := json.Marshal(&w)
			ctx.SetContentType("application/json")
			ctx.SetBody(body)
		case "/cache":
			if rp == nil {
				ctx.Error("no REDIS_URL", fasthttp.StatusInternalServerError)
				return
			}
			c := rp.Get()
			v, err := redis.Bytes(c.Do("GET", cacheKey))
			c.Close()
			if err != nil {
				ctx.Error(err.Error(), fasthttp.StatusServiceUnavailable)
				return
			}
			ctx.SetContentType("text/plain; charset=utf-8")
			ctx.SetBody(v)
		default:
			ctx.Error("not found", fasthttp.StatusNotFound)
		}
	}

	s := &fasthttp.Server{Handler: handler, Name: "gopeer"}
	if err := s.ListenAndServe("127.0.0.1:" + port); err != nil {
		log.Fatal(err)
	}
}
