"""Prometheus metrics: base units (watts, seconds), one `mullet_` prefix, bounded labels only.

Labels are group and tenant ids from the config (bounded by the site) and fixed reason sets; never
event ids or payload text.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mullet.daemon.process_metrics import register_process_metrics

# Plan computation is microseconds to a few ms; buckets resolve that range.
_FAST_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

# A command's acknowledgement: a PDU answers in milliseconds, a controller's state in up to seconds.
_ACK_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

GROUP_MODES = ("run", "curtail")


class ListenerSeries:
    """What every guarded HTTP listener reports (daemon/http_guard.py): the site daemon's metrics and
    the fleet dispatcher's both carry these."""

    http_connections_open: Gauge
    http_connections_closed: Counter
    http_accept_errors: Counter

    def _add_listener_series(self, r: CollectorRegistry) -> None:
        self.http_connections_open = Gauge(
            "mullet_http_connections_open",
            "Connections open on an HTTP listener (api, metrics).",
            ["listener"],
            registry=r,
        )
        self.http_connections_closed = Counter(
            "mullet_http_connections_closed_total",
            "HTTP connections the daemon closed, by listener and reason (limit: refused at accept, over"
            " max_connections; header_timeout, body_timeout; idle_timeout: keep-alive ended).",
            ["listener", "reason"],
            registry=r,
        )
        self.http_accept_errors = Counter(
            "mullet_http_accept_errors_total",
            "Failed accepts on an HTTP listener (EMFILE and kin: the process is out of file descriptors).",
            registry=r,
        )


class Metrics(ListenerSeries):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        register_process_metrics(r)
        self.site_power = Gauge(
            "mullet_site_power_watts", "Site import at the meter; NaN when unknown.", registry=r
        )
        self.ai_power = Gauge("mullet_ai_power_watts", "Sum of AI tenant power as reported.", registry=r)
        self.mining_power = Gauge(
            "mullet_mining_power_watts", "Sum of mining group power as reported.", registry=r
        )
        self.site_limit = Gauge("mullet_site_limit_watts", "Tightest site import limit in force.", registry=r)
        self.mining_budget = Gauge(
            "mullet_mining_budget_watts", "Power the plan leaves for mining after AI and margins.", registry=r
        )
        self.group_mode = Gauge(
            "mullet_group_mode",
            "1 for the mode a group is commanded to, 0 otherwise.",
            ["group_id", "mode"],
            registry=r,
        )
        self.groups_curtailed = Gauge(
            "mullet_groups_curtailed", "Mining groups commanded to curtail.", registry=r
        )
        self.obligations_active = Gauge(
            "mullet_grid_obligations_active", "Accepted grid obligations in force now.", registry=r
        )
        self.rejected = Counter(
            "mullet_rejected_messages_total", "Inbound messages refused, by reason.", ["reason"], registry=r
        )
        self.meter_rejected = Counter(
            "mullet_meter_samples_rejected_total",
            "Meter samples not used, by reason.",
            ["reason"],
            registry=r,
        )
        self.meter_stale = Gauge(
            "mullet_meter_stale", "1 while the site meter reading is unknown.", registry=r
        )
        self.meter_frequency_refresh = Gauge(
            "mullet_meter_frequency_refresh_seconds",
            "Median time between changes of the meter's frequency reading (its refresh, or more).",
            registry=r,
        )
        self.journal_history_lost = Gauge(
            "mullet_journal_history_lost",
            "1: started with an empty journal where the broker held the site's history (docs/operations.md).",
            registry=r,
        )
        self.trip_pickup = Gauge(
            "mullet_trip_pickup_seconds",
            "Least time between two frequency samples counted as separate measurements.",
            registry=r,
        )
        self.grid_events = Counter(
            "mullet_grid_events_total", "Grid events received, by outcome.", ["outcome"], registry=r
        )
        self.drills = Counter(
            "mullet_drills_total",
            "Drills (mulletd drill) by outcome: accepted, rejected, scheduled, cancelled, missed, dry_run."
            " Never counted as grid events.",
            ["outcome"],
            registry=r,
        )
        self.grid_event_rejections = Counter(
            "mullet_grid_events_rejected_total",
            "Grid events refused (MQTT, HTTP or OpenADR), by the code the ack carries.",
            ["reason"],
            registry=r,
        )
        self.config_reloads = Counter(
            "mullet_config_reloads_total",
            "SIGHUP config reloads by result (ok, invalid, needs_restart); refused: old config kept.",
            ["result"],
            registry=r,
        )
        self.api_refusals = Counter(
            "mullet_http_api_refusals_total",
            "HTTP API write requests refused before acting, by reason (unauthorized, writes_disabled).",
            ["reason"],
            registry=r,
        )
        self._add_listener_series(r)
        self.openadr_events = Counter(
            "mullet_openadr_events_total",
            "OpenADR events answered by the VEN, by opt (optIn, optOut) and reason code.",
            ["opt", "reason"],
            registry=r,
        )
        self.openadr_handler_seconds = Histogram(
            "mullet_openadr_event_handler_seconds",
            "The VEN's on_event handler: event received to opt decision returned.",
            buckets=_FAST_BUCKETS_S,
            registry=r,
        )
        self.openadr_registered = Gauge(
            "mullet_openadr_registered", "1 while the VEN is registered with its VTN.", registry=r
        )
        self.openadr_reports = Counter(
            "mullet_openadr_reports_total",
            "TELEMETRY_USAGE samples handed to the VEN, by whether the site power was known.",
            ["known"],
            registry=r,
        )
        self._add_qse_series(r)
        self._add_fourcp_series(r)
        self.setpoints = Counter("mullet_setpoints_published_total", "Group setpoints published.", registry=r)
        self.plan_seconds = Histogram(
            "mullet_plan_compute_seconds", "Time to compute one plan.", buckets=_FAST_BUCKETS_S, registry=r
        )
        self.modbus_seconds = Histogram(
            "mullet_modbus_round_trip_seconds",
            "Modbus request to response.",
            ["device"],
            buckets=_FAST_BUCKETS_S,
            registry=r,
        )
        self.frequency_rejected = Counter(
            "mullet_frequency_samples_rejected_total",
            "Frequency samples the trip trigger refused, by reason (never trip).",
            ["reason"],
            registry=r,
        )
        self.trips = Counter(
            "mullet_trips_total", "Armed trips fired, by stage and cause.", ["stage", "cause"], registry=r
        )
        self.trip_seconds = Histogram(
            "mullet_trip_fire_seconds",
            "Frequency sample (or event) to trip PUBLISH written and every armed PDU write issued: "
            "the daemon's own cost.",
            buckets=_FAST_BUCKETS_S,
            registry=r,
        )
        self.trip_settled_seconds = Histogram(
            "mullet_trip_settled_seconds",
            "Frequency sample (or event) to the trip's PUBACK and every PDU write acknowledged or failed.",
            buckets=_FAST_BUCKETS_S,
            registry=r,
        )
        self.shed_confirm_seconds = Histogram(
            "mullet_shed_confirm_seconds",
            "Shed command to the group's shed being confirmed, by how it was told (via) and what showed "
            "it (source: telemetry, or pdu outlet readback).",
            ["via", "source"],
            buckets=(0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0),
            registry=r,
        )
        self.escalations = Counter(
            "mullet_escalations_total",
            "Groups that did not confirm a shed in time and were escalated to a PDU cut, by result.",
            ["result"],
            registry=r,
        )
        self.mqtt_connected = Gauge("mullet_mqtt_connected", "1 while the broker session is up.", registry=r)
        self.mqtt_connections = Counter(
            "mullet_mqtt_connections_total", "Broker sessions established (reconnects included).", registry=r
        )

        self.command_ack_seconds = Histogram(
            "mullet_command_ack_seconds",
            "Command sent to its acknowledgement, by class of device: mining (setpoint published to "
            "the group's state reporting its seq) or pdu (outlet switch to every write answered).",
            ["class"],
            buckets=_ACK_BUCKETS_S,
            registry=r,
        )
        self.group_ack_pending = Gauge(
            "mullet_group_ack_pending_seconds",
            "Age of the group's last setpoint while its state has not reported that seq; 0 once it has.",
            ["group_id"],
            registry=r,
        )
        self.group_telemetry_known = Gauge(
            "mullet_group_telemetry_known",
            "1 while the group's telemetry is fresh and it is online, 0 while it is unknown.",
            ["group_id"],
            registry=r,
        )
        self.plan_feasible = Gauge(
            "mullet_plan_feasible", "1 when the last plan fits the site limit, 0 when it cannot.", registry=r
        )
        # The absorber (issue 23): the import's ramp as the meter saw it, and the swing reserve's cost.
        self.import_ramp_10s = Gauge(
            "mullet_import_ramp_10s_watts",
            "Largest change of the metered site import within any 10 s of the last minute; NaN before"
            " two samples.",
            registry=r,
        )
        self.import_ramp_60s = Gauge(
            "mullet_import_ramp_60s_watts",
            "Largest change of the metered site import within the last minute; NaN before two samples.",
            registry=r,
        )
        self.swing_reserve = Gauge(
            "mullet_swing_reserve_watts",
            "Mining the last plan holds below its budget as the swing reserve (0 with none configured).",
            registry=r,
        )
        self.swing_reserve_hashrate = Gauge(
            "mullet_swing_reserve_hashrate_terahashes_per_second",
            "Hashrate the swing reserve gives up (kW x 1000 / J/TH, most efficient room first).",
            registry=r,
        )
        self.obligation_excess = Gauge(
            "mullet_obligation_excess_watts",
            "Site import above the tightest active obligation's limit (0 when under it or with no "
            "obligation; NaN while the meter is unknown during one).",
            registry=r,
        )
        self.journal_written = Counter(
            "mullet_journal_entries_written_total", "Journal entries committed to disk.", registry=r
        )
        self.journal_dropped = Counter(
            "mullet_journal_entries_dropped_total",
            "Journal entries lost because the writer's queue was full, by entry kind.",
            ["kind"],
            registry=r,
        )
        self.journal_commit_seconds = Histogram(
            "mullet_journal_commit_seconds",
            "One journal transaction (a batch of entries) written and synced to disk.",
            buckets=_FAST_BUCKETS_S,
            registry=r,
        )
        self.journal_queue = Gauge(
            "mullet_journal_queue_entries", "Journal entries waiting for the writer.", registry=r
        )

        self.site_power.set(float("nan"))

    def set_group_mode(self, group_id: str, mode: str) -> None:
        for candidate in GROUP_MODES:
            self.group_mode.labels(group_id=group_id, mode=candidate).set(1.0 if candidate == mode else 0.0)

    def _add_qse_series(self, r: CollectorRegistry) -> None:
        """The QSE link (docs/qse.md): its alarms, and what its Modbus server answered."""
        self.qse_link_up = Gauge(
            "mullet_qse_link_up", "1 while the QSE's heartbeat register is changing (alarm at 0).", registry=r
        )
        self.qse_fail_safe = Gauge(
            "mullet_qse_fail_safe",
            "1 while the QSE link is lost and its fail-safe applies (qse.fail_safe).",
            registry=r,
        )
        self.qse_link_lost = Counter(
            "mullet_qse_link_lost_total", "Times the QSE's heartbeat stood still for the timeout.", registry=r
        )
        self.qse_heartbeat_age = Gauge(
            "mullet_qse_heartbeat_age_seconds",
            "Seconds since the QSE's heartbeat register last changed; NaN before the first.",
            registry=r,
        )
        self.qse_connections = Gauge(
            "mullet_qse_connections", "Modbus connections open to the QSE link's server.", registry=r
        )
        self.qse_reads = Counter(
            "mullet_qse_reads_total", "Read requests the QSE link answered, by table.", ["table"], registry=r
        )
        self.qse_writes = Counter(
            "mullet_qse_writes_total",
            "Write requests the QSE link accepted: journaled (a level changed), unchanged (heartbeat or"
            " a level already in force).",
            ["result"],
            registry=r,
        )
        self.qse_refusals = Counter(
            "mullet_qse_refusals_total",
            "Connections and requests the QSE link refused, by reason (docs/qse.md).",
            ["reason"],
            registry=r,
        )

    def _add_fourcp_series(self, r: CollectorRegistry) -> None:
        """4CP avoidance (`[fourcp]`, docs/programs.md "4CP"): its input files and its decisions."""
        self.fourcp_forecast_ready = Gauge(
            "mullet_fourcp_forecast_ready",
            "1 while a fresh forecast for today lets the 4CP rule decide (0 also without [fourcp]).",
            registry=r,
        )
        self.fourcp_forecast_age = Gauge(
            "mullet_fourcp_forecast_age_seconds",
            "Age of the last good 4CP forecast file, by its mtime; NaN before one is read.",
            registry=r,
        )
        self.fourcp_forecast_age.set(float("nan"))
        self.fourcp_peak_probability = Gauge(
            "mullet_fourcp_peak_probability",
            "The last 4CP decision's chance that its day tops the month; NaN when none or unknown.",
            registry=r,
        )
        self.fourcp_peak_probability.set(float("nan"))
        self.fourcp_break_even_probability = Gauge(
            "mullet_fourcp_break_even_probability",
            "The last 4CP decision's break-even chance (hold when the peak probability reaches it).",
            registry=r,
        )
        self.fourcp_break_even_probability.set(float("nan"))
        self.fourcp_decisions = Counter(
            "mullet_fourcp_decisions_total",
            "4CP decisions, by decision (hold, run).",
            ["decision"],
            registry=r,
        )
        self.fourcp_events = Counter(
            "mullet_fourcp_events_total",
            "4CP holds submitted as grid events, by outcome (accepted, duplicate, rejected, timeout).",
            ["outcome"],
            registry=r,
        )
        self.fourcp_file_loads = Counter(
            "mullet_fourcp_file_loads_total",
            "4CP system-load file reads, by file (forecast, actual) and result (ok, refused, missing).",
            ["file", "result"],
            registry=r,
        )
        self.fourcp_rows_rejected = Counter(
            "mullet_fourcp_rows_rejected_total",
            "Rows of 4CP system-load files rejected (the rest of the file is used), by file.",
            ["file"],
            registry=r,
        )
