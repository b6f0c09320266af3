public let routerStub = 1
