#!/usr/bin/env bash
# Wires Secret Manager's rotation schedule to the Cloud Run service
# keyrotate-serve (service.yaml): the topic, the push subscription and the
# IAM bindings, then each slot's schedule (keyrotate schedule). Idempotent:
# run it again after changing anything below.
#
#   PROJECT=my-project REGION=europe-west1 CONFIG=keyrotate.yaml \
#   SECRET_PROJECTS="acme-ai-prod acme-web-prod" deploy/cloudrun/rotation-events.sh
#
# CONFIG is the keyrotate.yaml the service runs with; its schedule_topic
# (in defaults or per slot) must be projects/PROJECT/topics/TOPIC.
# SECRET_PROJECTS are the projects of the slots' secrets.
#
# What it sets up (https://cloud.google.com/secret-manager/docs/secret-rotation,
# https://cloud.google.com/secret-manager/docs/event-notifications,
# https://cloud.google.com/pubsub/docs/authenticate-push-subscriptions):
#   - topic keyrotate-rotations in PROJECT; in each of SECRET_PROJECTS, the
#     Secret Manager service agent may publish to it (roles/pubsub.publisher);
#   - the push service account keyrotate-push, the only invoker of the
#     service (roles/run.invoker); the push subscription signs its OIDC
#     token as it, with the service's URL as audience (service.yaml's
#     KEYROTATE_PUSH_AUDIENCE and KEYROTATE_PUSH_SERVICE_ACCOUNT);
#   - the push subscription: ack deadline 600s (a rotation waits for its new
#     key to work), retry backoff 10s to 600s, messages kept 7 days;
#   - each slot's secret: the topic added (other topics kept) and a rotation
#     schedule every max_age, next when the current key reaches it
#     (keyrotate schedule, which shows the difference first; your account
#     needs secretmanager.secrets.update on the secrets).
# Optional: TOPIC, SUBSCRIPTION, SERVICE, PUSH_SA.
set -euo pipefail

: "${PROJECT:?set PROJECT to the project of the Cloud Run service}"
: "${REGION:?set REGION to the region of the Cloud Run service, e.g. europe-west1}"
: "${CONFIG:?set CONFIG to the keyrotate.yaml whose schedule_topic names the topic}"
: "${SECRET_PROJECTS:?set SECRET_PROJECTS to the projects of the slots secrets, separated by spaces}"
TOPIC="${TOPIC:-keyrotate-rotations}"
SUBSCRIPTION="${SUBSCRIPTION:-keyrotate-serve-push}"
SERVICE="${SERVICE:-keyrotate-serve}"
PUSH_SA="${PUSH_SA:-keyrotate-push@${PROJECT}.iam.gserviceaccount.com}"
PROJECT_NUMBER="$(gcloud projects describe "$PROJECT" --format 'value(projectNumber)')"
URL="https://${SERVICE}-${PROJECT_NUMBER}.${REGION}.run.app"

if ! grep -q "schedule_topic: *projects/${PROJECT}/topics/${TOPIC}" "$CONFIG"; then
  echo "$CONFIG names no schedule_topic projects/${PROJECT}/topics/${TOPIC}: add it to defaults (or to each slot)" >&2
  exit 2
fi

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

# Each secret's project: its Secret Manager service agent may publish to the
# topic (without it nothing is published there).
for sp in $SECRET_PROJECTS; do
  gcloud beta services identity create --service secretmanager.googleapis.com --project "$sp" >/dev/null
  spn="$(gcloud projects describe "$sp" --format 'value(projectNumber)')"
  gcloud pubsub topics add-iam-policy-binding "$TOPIC" --project "$PROJECT" \
    --member "serviceAccount:service-${spn}@gcp-sa-secretmanager.iam.gserviceaccount.com" \
    --role roles/pubsub.publisher >/dev/null
done

# Each slot's schedule and topic, from its max_age and schedule_topic: the
# difference first, then the writes (none when nothing differs).
keyrotate --config "$CONFIG" schedule --dry-run
keyrotate --config "$CONFIG" schedule
echo "Pushes go to ${URL}/ as ${PUSH_SA}. Watch them: gcloud logging read 'resource.labels.service_name=\"${SERVICE}\"' --project $PROJECT"
