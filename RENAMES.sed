# Store method renames of issue 12 (the store composed of parts). Apply with:
#   sed -E -i -f RENAMES.sed FILE...
# The receiver is any name ending in `store` (store, self.store, ctx.store, any_store) or `s`.
# Runs: store.runs
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.get_run\(/\1.runs.get(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.list_runs\(/\1.runs.list(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.resolve_id\(/\1.runs.resolve_id(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.claim\(/\1.runs.claim(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.heartbeat\(/\1.runs.heartbeat(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.request_cancel\(/\1.runs.cancel(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.finish_cancelled\(/\1.runs.end_cancelled(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.end_failed\(/\1.runs.end_failed(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.reap\(/\1.runs.reap(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.reap_owned\(/\1.runs.reap_owned(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.reopen\(/\1.runs.reopen(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.run_brief\(/\1.runs.brief(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.run_input_json\(/\1.runs.input_json(/g
# Steps: store.steps
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.claim_step\(/\1.steps.claim(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.heartbeat_steps\(/\1.steps.heartbeat(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.release_step\(/\1.steps.release(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.step_states\(/\1.steps.states(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.live_leases\(/\1.steps.live_leases(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.start_attempt\(/\1.steps.start_attempt(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.record_failure\(/\1.steps.record_failure(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.record_calls\(/\1.steps.record_calls(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.mark_skipped\(/\1.steps.mark_skipped(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.await_approval\(/\1.steps.await_approval(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.step_approved\(/\1.steps.approved(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.claimer\(/\1.steps.claimer(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.decide\(/\1.steps.decide(/g
# Events: store.events
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.add_event\(/\1.events.add(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.get_event\(/\1.events.get(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.list_events\(/\1.events.list(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.record_subscriptions\(/\1.events.record_subscriptions(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.subscriptions_of\(/\1.events.subscriptions_of(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.delivery_run\(/\1.events.delivery_run(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.outbox\(/\1.events.outbox(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.mark_dispatched\(/\1.events.mark_dispatched(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.undeliverable\(/\1.events.undeliverable(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.chain_busy\(/\1.events.chain_busy(/g
# Effects: store.effects
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.begin_effect\(/\1.effects.begin(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.finish_effect\(/\1.effects.finish(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.abandon_effect\(/\1.effects.abandon(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.mark_effect\(/\1.effects.mark(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.get_effect\(/\1.effects.get(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.list_effects\(/\1.effects.list(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.rewinds\(/\1.effects.rewinds(/g
# Browse: store.browse
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.count_runs\(/\1.browse.count(/g
s/\b((self\.|ctx\.)?[a-z_]*store|s)\.run_facets\(/\1.browse.facets(/g
