from mlflow.models import set_model

from serving.baseline_model import BaselineVoltageModel

set_model(BaselineVoltageModel())
