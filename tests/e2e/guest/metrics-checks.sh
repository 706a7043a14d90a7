# Sourced by vm-checks (uses its check and wait_for): node_exporter's textfile
# directory gets hvguest.prom from hvguest-metrics.timer, rewritten every 30 s.
prom_dir=/var/lib/prometheus/node-exporter
newer_than() { [ "$(stat -c %Y "$1" 2>/dev/null || echo 0)" -gt "$2" ]; }
metrics_textfile() {
    # As installing node_exporter does; the path unit waits only where
    # /var/lib/prometheus existed at boot, so start it as a reboot would.
    mkdir -p "$prom_dir"
    systemctl start hvguest-metrics.path || return 1
    if ! wait_for 60 test -s "$prom_dir/hvguest.prom"; then
        systemctl --no-pager status hvguest-metrics.path hvguest-metrics.timer \
            hvguest-metrics.service
        return 1
    fi
    grep -q '^hvguest_version_info{version="' "$prom_dir/hvguest.prom" || return 1
    grep '^hvguest_service_offered\|^hvguest_daemon_up' "$prom_dir/hvguest.prom"
    first=$(stat -c %Y "$prom_dir/hvguest.prom")
    # Rewritten by the timer (30 s), never left half-written or beside a temporary file.
    wait_for 50 newer_than "$prom_dir/hvguest.prom" "$first" || return 1
    ls -la "$prom_dir"
    [ "$(ls -A "$prom_dir")" = hvguest.prom ] || return 1
    systemctl --no-pager list-timers hvguest-metrics.timer
}
check metrics-textfile metrics_textfile
