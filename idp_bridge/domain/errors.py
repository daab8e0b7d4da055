"""Domain errors. Each carries a message safe to show the caller; the web and protocol
layers map them to HTTP answers (STYLE.md: grants only raise, the server answers)."""


class DomainError(Exception):
    def __init__(self, description: str):
        super().__init__(description)
        self.description = description


class NotFound(DomainError):
    pass


class Forbidden(DomainError):
    pass


class Conflict(DomainError):
    pass


class InvalidInput(DomainError):
    pass


class AccessCodeRejected(DomainError):
    """Wrong, expired or reused access code, or too many attempts."""
