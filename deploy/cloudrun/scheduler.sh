#!/usr/bin/env bash
# Creates, or updates, the Cloud Scheduler job that starts the Cloud Run Job
# keyrotate (job.yaml) every day. Run it again after changing anything below.
#
#   PROJECT=my-project REGION=europe-west1 deploy/cloudrun/scheduler.sh
#
# The scheduler calls the Cloud Run Admin API (jobs.run) with an OAuth token of
# the account SCHEDULER_SA, which needs roles/run.invoker on the job (granted
# below) and nothing else; you need roles/iam.serviceAccountUser on it to
# attach it. Optional: SCHEDULE (cron, default daily at 03:17), TIME_ZONE
# (default Etc/UTC), JOB (default keyrotate), SCHEDULER_SA.
set -euo pipefail

: "${PROJECT:?set PROJECT to the project of the Cloud Run Job}"
: "${REGION:?set REGION to the region of the Cloud Run Job, e.g. europe-west1}"
JOB="${JOB:-keyrotate}"
SCHEDULE="${SCHEDULE:-17 3 * * *}"
TIME_ZONE="${TIME_ZONE:-Etc/UTC}"
SCHEDULER_SA="${SCHEDULER_SA:-keyrotate-scheduler@${PROJECT}.iam.gserviceaccount.com}"
NAME="${JOB}-daily"
URI="https://run.googleapis.com/v2/projects/${PROJECT}/locations/${REGION}/jobs/${JOB}:run"

# The invoker account: create it once.
if ! gcloud iam service-accounts describe "$SCHEDULER_SA" --project "$PROJECT" >/dev/null 2>&1; then
  gcloud iam service-accounts create "${SCHEDULER_SA%%@*}" --project "$PROJECT" \
    --display-name "Starts the keyrotate Cloud Run Job"
fi
# Only the right to run this one job (run.jobs.run).
gcloud run jobs add-iam-policy-binding "$JOB" --project "$PROJECT" --region "$REGION" \
  --member "serviceAccount:${SCHEDULER_SA}" --role roles/run.invoker >/dev/null

# The same flags for create and update. The POST returns at once with the
# execution's operation; the tasks then run on their own (job.yaml's
# timeoutSeconds bounds them). --max-retry-attempts 0: a failed start is not
# retried by the scheduler (a second execution would only find the slots
# busy); the next day's run picks up what is due.
flags=(
  --project "$PROJECT"
  --location "$REGION"
  --schedule "$SCHEDULE"
  --time-zone "$TIME_ZONE"
  --uri "$URI"
  --http-method POST
  --oauth-service-account-email "$SCHEDULER_SA"
  --oauth-token-scope https://www.googleapis.com/auth/cloud-platform
  --attempt-deadline 60s
  --max-retry-attempts 0
  --description "Starts the Cloud Run Job ${JOB} (keyrotate: rotate due API keys)"
)
if gcloud scheduler jobs describe "$NAME" --project "$PROJECT" --location "$REGION" >/dev/null 2>&1; then
  gcloud scheduler jobs update http "$NAME" "${flags[@]}"
else
  gcloud scheduler jobs create http "$NAME" "${flags[@]}"
fi

echo "Cloud Scheduler job $NAME runs $JOB at '$SCHEDULE' ($TIME_ZONE)."
echo "Run it now: gcloud scheduler jobs run $NAME --project $PROJECT --location $REGION"
