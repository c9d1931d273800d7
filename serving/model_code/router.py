from mlflow.models import set_model

from serving.router import VoltageRouterModel

set_model(VoltageRouterModel())
