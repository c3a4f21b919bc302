# Telemetry for compose runs, sourced by bench.sh: the same telemetry.jsonl as `invoke bench` writes
# (docs/energy.md), from a POSIX shell loop. A container sees the host's sysfs read-only, so the amdgpu
# hwmon and card files are readable here; /sys/firmware is masked by Docker, so the platform profile
# is not. What it samples: amdgpu package power (power1_average, power1_input), edge temperature, gfx
# clock, gpu_busy_percent, and the CPU's k10temp / zenpower / coretemp temperature; 5 times a second
# (builtins only in the loop: no process is started per sample). Clock: /proc/uptime for samples and
# marks alike. TELEMETRY=0 turns it off; TELEMETRY_SYSFS points it at another tree (tests: a fake one).
tel_sys=${TELEMETRY_SYSFS:-/sys}
tel_file=""
tel_list=""
tel_names=""
tel_pid=""
tel_warn=""
tel_body=""

tel_q() { printf '"%s"' "$(esc "$1")"; }

tel_add() { # name path kind(uw|mc|hz|int) label: keep a sensor if one read of it works now
  [ -e "$2" ] || return 0
  if ! read -r _v < "$2" 2> /dev/null || [ -z "$_v" ] || [ -n "$(printf '%s' "$_v" | tr -d 0-9)" ]; then
    tel_warn="$tel_warn${tel_warn:+, }$(tel_q "${2#"$tel_sys"}: unreadable, not sampled")"
    return 0
  fi
  tel_list="$tel_list${tel_list:+, }{\"name\": \"$1\", \"path\": $(tel_q "/sys${2#"$tel_sys"}"), \"kind\": \"$3\", \"label\": $(tel_q "$4")}"
  tel_names="$tel_names${tel_names:+, }\"$1\""
  case $3 in # the loop's code for this sensor: read, convert with shell arithmetic, append "name": value
    uw) conv='w=$((v / 1000000)); f=$((1000000 + v % 1000000)); x="$w.${f#1}"' ;;
    mc) conv='w=$((v / 1000)); f=$((1000 + v % 1000)); x="$w.${f#1}"' ;;
    hz) conv='x=$((v / 1000000))' ;;
    *) conv='x=$v' ;;
  esac
  tel_body="$tel_body
    if read -r v < '$2' 2> /dev/null && [ -n \"\$v\" ]; then $conv; s=\"\$s\${s:+,}\\\"$1\\\":\$x\"; fi"
}

tel_discover() {
  sclk_max=""
  for dev in "$tel_sys"/class/drm/card*/device; do
    card=${dev%/device}
    case ${card##*/} in *-*) continue ;; esac # connectors (card1-eDP-1)
    grep -q '^DRIVER=amdgpu' "$dev/uevent" 2> /dev/null || continue
    for hw in "$dev"/hwmon/hwmon*; do
      [ -d "$hw" ] || continue
      tel_add gpu.power_avg_w "$hw/power1_average" uw PPT
      tel_add gpu.power_input_w "$hw/power1_input" uw PPT
      tel_add gpu.temp_edge_c "$hw/temp1_input" mc edge
      tel_add gpu.sclk_mhz "$hw/freq1_input" hz sclk
    done
    tel_add gpu.busy_pct "$dev/gpu_busy_percent" int ""
    sclk_max=$(sed -n 's/^[0-9]*: *\([0-9]*\)[Mm][Hh]z.*/\1/p' "$dev/pp_dpm_sclk" 2> /dev/null | sort -n | tail -n1)
    break # the first amdgpu card
  done
  for hw in "$tel_sys"/class/hwmon/hwmon*; do
    read -r name < "$hw/name" 2> /dev/null || continue
    case $name in
      k10temp | zenpower | coretemp)
        label=$(tr 'A-Z' 'a-z' < "$hw/temp1_label" 2> /dev/null | tr -c 'a-z0-9\n' '_')
        tel_add "cpu.temp_${label:-temp1}_c" "$hw/temp1_input" mc "${label:-temp1}"
        ;;
    esac
  done
}

tel_now() { read -r tel_t _ < /proc/uptime; }

tel_mark() { # event group [row]: on the samples' clock; also sets the phase the next samples carry
  [ -n "$tel_file" ] || return 0
  tel_now
  case $1 in # the loop reads the phase from a file, replaced whole (never seen half-written)
    idle_start) echo "idle $2" > "$dir/.tel-phase.tmp" ;;
    container_start) echo "group $2" > "$dir/.tel-phase.tmp" ;;
    idle_end | container_end) echo "between $2" > "$dir/.tel-phase.tmp" ;;
  esac
  [ ! -e "$dir/.tel-phase.tmp" ] || mv -f "$dir/.tel-phase.tmp" "$dir/.tel-phase"
  printf '{"kind":"mark","event":"%s","t":%s,"group":"%s"%s}\n' "$1" "$tel_t" "$2" "${3:+,\"row\":$3}" >> "$tel_file"
}

tel_start() { # before the first group: header line, then the loop in the background
  [ "${TELEMETRY:-1}" != 0 ] || return 0
  tel_file="$dir/telemetry.jsonl"
  tel_discover
  tel_now
  facts="{\"runner\": \"compose\"${sclk_max:+, \"sclk_max_mhz\": {\"gpu\": $sclk_max\}}}"
  printf '{"kind":"header","t0":%s,"wall0":%s,"rate_hz":5,"idle_s":%s,"root":"/","sensor_names":[%s],"sensors":[%s],"facts":%s,"warnings":[%s]}\n' \
    "$tel_t" "$(date +%s.%N)" "${TELEMETRY_IDLE_S:-3}" "$tel_names" "$tel_list" "$facts" "$tel_warn" > "$tel_file"
  [ -n "$tel_list" ] || return 0
  echo "between" > "$dir/.tel-phase"
  eval "tel_loop() {
  n=0
  while [ ! -e \"\$dir/.tel-stop\" ]; do
    read -r t _ < /proc/uptime
    read -r phase group < \"\$dir/.tel-phase\"
    s=''$tel_body
    printf '{\"kind\":\"sample\",\"t\":%s,\"phase\":\"%s\",\"group\":\"%s\",\"v\":{%s}}\\n' \"\$t\" \"\$phase\" \"\$group\" \"\$s\" >> \"\$tel_file\"
    n=\$((n + 1))
    sleep 0.2
  done
  printf '{\"kind\":\"end\",\"samples\":%s,\"warnings\":[]}\\n' \"\$n\" >> \"\$tel_file\"
}"
  tel_loop &
  tel_pid=$!
}

tel_idle() { # group: the idle baseline before it (no model loaded)
  [ -n "$tel_list" ] && [ "${TELEMETRY_IDLE_S:-3}" != 0 ] || return 0
  tel_mark idle_start "$1"
  sleep "${TELEMETRY_IDLE_S:-3}"
  tel_mark idle_end "$1"
}

tel_stop() {
  [ -n "$tel_pid" ] || return 0
  touch "$dir/.tel-stop"
  wait "$tel_pid" 2> /dev/null || true
  rm -f "$dir/.tel-stop" "$dir/.tel-phase"
  tel_pid=""
}
