<?php
// PHP native sessions, for tests/frameworks_live.rs: served by `php -S ADDRESS:PORT php_app.php`
// (Debian's php-cli built-in server).
//
//   GET  /login   the login form; starts a session (`PHPSESSID`)
//   POST /login   username, password (`pw-<name>`): session_regenerate_id, then the user
//   GET  /me      "user: <name>" when logged in, else 401
session_start();
$path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);
$users = ['alice', 'bob'];
if ($path === '/login' && $_SERVER['REQUEST_METHOD'] === 'GET') {
    echo '<form method="post"><input name="username"><input name="password"></form>';
} elseif ($path === '/login' && $_SERVER['REQUEST_METHOD'] === 'POST') {
    $name = $_POST['username'] ?? '';
    if (in_array($name, $users, true) && ($_POST['password'] ?? '') === "pw-$name") {
        session_regenerate_id(true);
        $_SESSION['user'] = $name;
        echo 'welcome';
    } else {
        http_response_code(403);
        echo 'bad credentials';
    }
} elseif ($path === '/me') {
    if (isset($_SESSION['user'])) {
        echo 'user: ' . $_SESSION['user'];
    } else {
        http_response_code(401);
        echo 'not logged in';
    }
} else {
    http_response_code(404);
    echo 'not found';
}
