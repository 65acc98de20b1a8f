"""Train scikit-learn's MLPClassifier epoch by epoch (partial_fit); val_accuracy per epoch as step metrics."""

import argparse
import os

import mlflow
import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    seed = int(os.environ.get("EXPAGENT_SEED", "42"))
    path = os.environ["EXPAGENT_DATASET_PATH"]
    frame = (
        pd.read_parquet(path) if os.environ.get("EXPAGENT_DATASET_FORMAT") == "parquet" else pd.read_csv(path)
    )
    target = os.environ["EXPAGENT_DATASET_TARGET"]
    x, y = frame.drop(columns=[target]).to_numpy(float), frame[target].to_numpy()
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    scaler = StandardScaler().fit(x_train)
    net = MLPClassifier(hidden_layer_sizes=(args.hidden,), learning_rate_init=args.lr, random_state=seed)
    classes = np.unique(y)
    with mlflow.start_run():  # attaches to MLFLOW_RUN_ID
        mlflow.log_params({"hidden": args.hidden, "lr": args.lr, "epochs": args.epochs})
        dataset = mlflow.data.from_pandas(frame, source=os.environ.get("EXPAGENT_DATASET_URI", path),
                                          name=os.environ.get("EXPAGENT_DATASET_NAME"),
                                          digest=os.environ["EXPAGENT_DATASET_SHA256"][:36])  # fmt: skip
        mlflow.log_input(dataset, context="training")
        for epoch in range(1, args.epochs + 1):
            net.partial_fit(scaler.transform(x_train), y_train, classes=classes)
            accuracy = float(np.mean(net.predict(scaler.transform(x_val)) == y_val))
            mlflow.log_metric("val_accuracy", accuracy, step=epoch)
        model = make_pipeline(scaler, net)
        mlflow.sklearn.log_model(
            model,
            name="model",
            serialization_format="cloudpickle",
            pip_requirements=["scikit-learn", "mlflow"],
        )


if __name__ == "__main__":
    main()
