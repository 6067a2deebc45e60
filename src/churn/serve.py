"""`churn.serve:create_app`, the name uvicorn and users import: the app lives in
churn.serving (settings, loading, validation, metrics, middleware, reload, app)."""

from churn.serving.app import create_app
from churn.serving.loading import challenger_entry, load_bundle
from churn.serving.settings import Settings
from churn.serving.validation import validate_record

__all__ = ["Settings", "challenger_entry", "create_app", "load_bundle", "validate_record"]
