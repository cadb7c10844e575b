#!/usr/bin/env bash
# Wires Secret Manager's rotation schedule to the Cloud Run service
# keyrotate-serve (service.yaml): the topic, the push subscription and the
# IAM bindings, then each slot's secret's schedule and topic. Idempotent:
# run it again after changing anything below.
#
#   PROJECT=my-project REGION=europe-west1 \
#   SECRETS="projects/acme-ai-prod/secrets/gemini-chat" ROTATION_PERIOD=90d \
#   deploy/cloudrun/rotation-events.sh
#
# What it sets up (https://cloud.google.com/secret-manager/docs/secret-rotation,
# https://cloud.google.com/secret-manager/docs/event-notifications,
# https://cloud.google.com/pubsub/docs/authenticate-push-subscriptions):
#   - topic keyrotate-rotations in PROJECT; in each secret's project, the
#     Secret Manager service agent may publish to it (roles/pubsub.publisher);
#   - the push service account keyrotate-push, the only invoker of the
#     service (roles/run.invoker); the push subscription signs its OIDC
#     token as it, with the service's URL as audience (service.yaml's
#     KEYROTATE_PUSH_AUDIENCE and KEYROTATE_PUSH_SERVICE_ACCOUNT);
#   - the push subscription: ack deadline 600s (a rotation waits for its new
#     key to work), retry backoff 10s to 600s, messages kept 7 days;
#   - each secret in SECRETS: the topic added (other topics kept) and a
#     rotation schedule: every ROTATION_PERIOD (at least 1h; match the slot's
#     max_age), first at NEXT_ROTATION (default: the
#     secret's next rotation time when it has one, else one period from now).
# Optional: TOPIC, SUBSCRIPTION, SERVICE, PUSH_SA, NEXT_ROTATION.
set -euo pipefail

: "${PROJECT:?set PROJECT to the project of the Cloud Run service}"
: "${REGION:?set REGION to the region of the Cloud Run service, e.g. europe-west1}"
: "${SECRETS:?set SECRETS to the slots secrets, projects/P/secrets/S separated by spaces}"
: "${ROTATION_PERIOD:?set ROTATION_PERIOD to the slots max_age in seconds or with a unit, e.g. 90d}"
TOPIC="${TOPIC:-keyrotate-rotations}"
SUBSCRIPTION="${SUBSCRIPTION:-keyrotate-serve-push}"
SERVICE="${SERVICE:-keyrotate-serve}"
PUSH_SA="${PUSH_SA:-keyrotate-push@${PROJECT}.iam.gserviceaccount.com}"
PROJECT_NUMBER="$(gcloud projects describe "$PROJECT" --format 'value(projectNumber)')"
URL="https://${SERVICE}-${PROJECT_NUMBER}.${REGION}.run.app"

# Seconds of a period such as 90d, 24h, 3600s or 3600.
period_seconds() {
  local v="$1"
  case "$v" in
    *d) echo $(( ${v%d} * 86400 )) ;;
    *h) echo $(( ${v%h} * 3600 )) ;;
    *s) echo "${v%s}" ;;
    *) echo "$v" ;;
  esac
}
PERIOD_S="$(period_seconds "$ROTATION_PERIOD")"
if (( PERIOD_S < 3600 )); then
  echo "ROTATION_PERIOD must be at least 1h (Secret Manager's minimum), got $ROTATION_PERIOD" >&2
  exit 2
fi
DEFAULT_NEXT="$(date -u -d "+${PERIOD_S} seconds" +%Y-%m-%dT%H:%M:%SZ)"

# The topic.
if ! gcloud pubsub topics describe "$TOPIC" --project "$PROJECT" >/dev/null 2>&1; then
  gcloud pubsub topics create "$TOPIC" --project "$PROJECT"
fi

# The push service account: the only invoker of the service.
if ! gcloud iam service-accounts describe "$PUSH_SA" --project "$PROJECT" >/dev/null 2>&1; then
  gcloud iam service-accounts create "${PUSH_SA%%@*}" --project "$PROJECT" \
    --display-name "Pub/Sub pushes of Secret Manager rotation events to keyrotate"
fi
gcloud run services add-iam-policy-binding "$SERVICE" --project "$PROJECT" --region "$REGION" \
  --member "serviceAccount:${PUSH_SA}" --role roles/run.invoker >/dev/null
# Pub/Sub's service agent makes the tokens it signs as PUSH_SA.
gcloud iam service-accounts add-iam-policy-binding "$PUSH_SA" --project "$PROJECT" \
  --member "serviceAccount:service-${PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com" \
  --role roles/iam.serviceAccountTokenCreator >/dev/null

# The push subscription.
flags=(
  --project "$PROJECT"
  --push-endpoint "${URL}/"
  --push-auth-service-account "$PUSH_SA"
  --push-auth-token-audience "$URL"
  --ack-deadline 600
  --min-retry-delay 10s
  --max-retry-delay 600s
  --message-retention-duration 7d
)
if gcloud pubsub subscriptions describe "$SUBSCRIPTION" --project "$PROJECT" >/dev/null 2>&1; then
  gcloud pubsub subscriptions update "$SUBSCRIPTION" "${flags[@]}"
else
  gcloud pubsub subscriptions create "$SUBSCRIPTION" --topic "$TOPIC" "${flags[@]}"
fi

# Each secret: its project's Secret Manager service agent may publish to
# the topic, then the topic and the schedule on the secret.
for secret in $SECRETS; do
  sp="$(cut -d/ -f2 <<<"$secret")"
  sid="$(cut -d/ -f4 <<<"$secret")"
  gcloud beta services identity create --service secretmanager.googleapis.com --project "$sp" >/dev/null
  spn="$(gcloud projects describe "$sp" --format 'value(projectNumber)')"
  gcloud pubsub topics add-iam-policy-binding "$TOPIC" --project "$PROJECT" \
    --member "serviceAccount:service-${spn}@gcp-sa-secretmanager.iam.gserviceaccount.com" \
    --role roles/pubsub.publisher >/dev/null
  # A schedule already running keeps its next time, unless NEXT_ROTATION
  # says otherwise: running this again does not push the rotation back.
  next="${NEXT_ROTATION:-$(gcloud secrets describe "$sid" --project "$sp" --format 'value(rotation.nextRotationTime)')}"
  next="${next:-$DEFAULT_NEXT}"
  topic_flags=()
  if ! gcloud secrets describe "$sid" --project "$sp" --format 'value(topics[].name)' | tr ';,' '\n\n' |
    grep -qx "projects/${PROJECT}/topics/${TOPIC}"; then
    topic_flags=(--add-topics "projects/${PROJECT}/topics/${TOPIC}")
  fi
  gcloud secrets update "$sid" --project "$sp" "${topic_flags[@]}" \
    --next-rotation-time "$next" \
    --rotation-period "${PERIOD_S}s"
  echo "$secret: SECRET_ROTATE to $TOPIC every ${PERIOD_S}s, next at $next"
done
echo "Pushes go to ${URL}/ as ${PUSH_SA}. Watch them: gcloud logging read 'resource.labels.service_name=\"${SERVICE}\"' --project $PROJECT"
