# Helpers shared by the scripts here (sourced, not run).

have() { command -v "$1" >/dev/null 2>&1; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Whether mosquitto is installed (Debian puts it in /usr/sbin, often off a user's PATH).
have_mosquitto() { have mosquitto || [ -x /usr/sbin/mosquitto ]; }

# Installs the Debian packages named, quietly.
apt_install() {
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
