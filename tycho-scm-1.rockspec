-- Build and install from a checkout: luarocks make --tree T tycho-scm-1.rockspec
-- (T/bin/tycho; the man page, the example scripts and the docs stay in the rock's
-- directory, T/lib/luarocks/rocks-5.1/tycho/scm-1/share/). See "Install with LuaRocks"
-- in docs/operations.md.
rockspec_format = "3.0"
package = "tycho"
version = "scm-1"
source = {
   url = "git+file://.",  -- built from a checkout with `luarocks make`
}
description = {
   summary = "A Lua-scriptable HTTP/1.1 application server written in C",
   detailed = [[
Tycho serves the Lua route scripts in a directory over HTTP/1.1: a C core
(libevent, http-parser, LuaJIT) owns sockets, framing, pooling and limits;
handlers are Lua. The rock installs the `tycho` program (LuaJIT and Tycho's Lua
prelude are built into it; there is no Lua module to require from another Lua).
Build dependencies are Debian packages, installed by `make` when run as root:
gcc, make, libc6-dev, pkg-config, libevent-dev, libhttp-parser-dev,
libluajit2-5.1-dev, lua-cjson.
]],
   license = "MIT",  -- LICENSE, as LuaJIT and lua-cjson
}
supported_platforms = { "linux" }  -- eventfd, inotify, accept4
-- The program embeds LuaJIT, so any Lua that luarocks itself runs on will do; nothing is
-- fetched (the "lua" dependency is luarocks' own interpreter, never a rock to download).
dependencies = {
   "lua >= 5.1",
}
build = {
   type = "make",
   -- luarocks runs `make all CC=... CFLAGS=...` (`all` installs missing Debian packages as
   -- root, or names them), then `make install CC=... PREFIX=<the rock's directory>`; it
   -- then copies PREFIX/bin/tycho to T/bin.
   build_target = "all",
   build_variables = {
      CFLAGS = "$(CFLAGS)",
   },
   install_target = "install",
   install_variables = {
      PREFIX = "$(PREFIX)",
   },
}
test = {
   type = "command",
   command = "make test",
}
