"""The seed documents' examples, unchanged but for the import lines."""

import serve_nb as serve
from serve_nb.handle import DeploymentHandle


def test_my_first_deployment(serve_instance):
    @serve.deployment
    class MyFirstDeployment:
        # Take the message to return as an argument to the constructor.
        def __init__(self, msg):
            self.msg = msg

        def __call__(self):
            return self.msg

    my_first_deployment = MyFirstDeployment.bind("Hello world!")
    handle: DeploymentHandle = serve.run(my_first_deployment)
    assert handle.remote().result() == "Hello world!"


def test_hello_world_composition(serve_instance):
    @serve.deployment
    class Hello:
        def __call__(self) -> str:
            return "Hello"

    @serve.deployment
    class World:
        def __call__(self) -> str:
            return " world!"

    @serve.deployment
    class Ingress:
        def __init__(self, hello_handle: DeploymentHandle, world_handle: DeploymentHandle):
            self._hello_handle = hello_handle
            self._world_handle = world_handle

        async def __call__(self) -> str:
            hello_response = self._hello_handle.remote()
            world_response = self._world_handle.remote()
            return (await hello_response) + (await world_response)

    hello = Hello.bind()
    world = World.bind()

    # The deployments passed to the Ingress constructor are replaced with handles.
    app = Ingress.bind(hello, world)

    # Deploys Hello, World, and Ingress.
    handle: DeploymentHandle = serve.run(app)

    # `DeploymentHandle`s can also be used to call the ingress deployment of an application.
    assert handle.remote().result() == "Hello world!"
    assert set(serve.status().applications["default"].deployments) == {"Hello", "World", "Ingress"}


def test_pipeline_with_serve_deployment_handle_annotation(serve_instance):
    @serve.deployment
    class MyModel:
        def __call__(self, request):
            return f"model({request})"

    @serve.deployment
    class Pipeline:
        def __init__(self, downstream: serve.DeploymentHandle):
            self._downstream = downstream

        async def __call__(self, request):
            result = await self._downstream.remote(request)
            return result

    pipeline = Pipeline.bind(MyModel.bind())
    handle = serve.run(pipeline)
    assert handle.remote("x").result() == "model(x)"


def test_service_with_name_and_route_prefix(serve_instance):
    @serve.deployment
    class Service:
        def __call__(self):
            return "svc"

    serve.run(Service.bind(), name="my-app", route_prefix="/svc")
    app = serve.status().applications["my-app"]
    assert app.status == "RUNNING"
    assert app.route_prefix == "/svc"
    assert serve.get_app_handle("my-app").remote().result() == "svc"
