from mlflow.models import set_model

from serving.potential_model import PotentialVoltageModel

set_model(PotentialVoltageModel())
