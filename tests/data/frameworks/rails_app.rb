# A Rails app in one file, for tests/frameworks_live.rs (Debian's ruby-rails and ruby-webrick).
# Usage: ruby rails_app.rb ADDRESS PORT WORKDIR
#
#   GET  /login   the login form with its CSRF authenticity_token; the cookie store's
#                 `_fwtest_session` cookie holds the CSRF token from here on
#   POST /login   username, password (`pw-<name>`), authenticity_token: reset_session (a new
#                 cookie), then the user
#   GET  /me      "user: <name>" when logged in, else 401
require "action_controller/railtie"
require "webrick"
require "rack/handler/webrick"

address, port, workdir = ARGV

class FrameworkTestApp < Rails::Application
  config.root = ARGV[2]
  config.secret_key_base = "test-only-" + "z" * 60
  config.eager_load = false
  config.logger = Logger.new(nil)
  config.hosts.clear
  config.session_store :cookie_store, key: "_fwtest_session"
  config.action_controller.allow_forgery_protection = true
end

class SessionsController < ActionController::Base
  protect_from_forgery with: :exception
  USERS = %w[alice bob].freeze

  def new
    render html: %(<form method="post"><input type="hidden" name="authenticity_token" value="#{form_authenticity_token}"><input name="username"><input name="password"></form>).html_safe
  end

  def create
    name = params[:username].to_s
    if USERS.include?(name) && params[:password] == "pw-#{name}"
      reset_session
      session[:user] = name
      render plain: "welcome"
    else
      render plain: "bad credentials", status: 403
    end
  end

  def show
    return render(plain: "not logged in", status: 401) unless session[:user]
    render plain: "user: #{session[:user]}"
  end
end

FrameworkTestApp.initialize!
FrameworkTestApp.routes.draw do
  get "/login" => "sessions#new"
  post "/login" => "sessions#create"
  get "/me" => "sessions#show"
end

Rack::Handler::WEBrick.run(
  FrameworkTestApp, Host: address, Port: port.to_i,
  Logger: WEBrick::Log.new(File::NULL), AccessLog: []
)
