// An Express app, for tests/frameworks_live.rs (express, express-session and cookie-session from
// npm). Usage: node express_app.js express-session|cookie-session ADDRESS PORT
//
//   GET  /login   the login form
//   POST /login   username, password (`pw-<name>`): the session gets the user (express-session:
//                 `connect.sid`, regenerated at login; cookie-session: `session` + `session.sig`)
//   GET  /me      "user: <name>" when logged in, else 401
const express = require("express");

const [mode, address, port] = process.argv.slice(2);
const app = express();
app.use(express.urlencoded({ extended: false }));
if (mode === "express-session") {
  const session = require("express-session");
  app.use(session({ secret: "test-only-secret", resave: false, saveUninitialized: false }));
} else if (mode === "cookie-session") {
  const cookieSession = require("cookie-session");
  app.use(cookieSession({ name: "session", keys: ["test-only-key"] }));
} else {
  throw new Error(`unknown mode ${mode}`);
}

const users = new Set(["alice", "bob"]);

app.get("/login", (req, res) => {
  res.send('<form method="post"><input name="username"><input name="password"></form>');
});

app.post("/login", (req, res) => {
  const name = req.body.username;
  if (!users.has(name) || req.body.password !== `pw-${name}`) {
    return res.status(403).send("bad credentials");
  }
  if (mode === "express-session") {
    // A new session id at login, as the express-session docs recommend.
    return req.session.regenerate((err) => {
      if (err) return res.status(500).send("session error");
      req.session.user = name;
      res.send("welcome");
    });
  }
  req.session.user = name;
  res.send("welcome");
});

app.get("/me", (req, res) => {
  if (!req.session || !req.session.user) return res.status(401).send("not logged in");
  res.send(`user: ${req.session.user}`);
});

app.listen(Number(port), address);
