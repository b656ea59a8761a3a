"""Running a converted model the way transformers users do: loading it, normalising its input
pixels, drawing its detections. Shared by verify and detect, so it sits below both."""
