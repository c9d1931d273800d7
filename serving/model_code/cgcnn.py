from mlflow.models import set_model

from serving.cgcnn_model import CGCNNVoltageModel

set_model(CGCNNVoltageModel())
