"""The DCB specification's examples as query commands (see :mod:`eventcore.boundary`).

- Course subscriptions with both limits: a course holds at most its capacity, a student
  subscribes to at most :data:`MAX_COURSES` courses; no stream per course-student pair.
- A unique user name: the decision reads only the events tagged with that name.
- Gapless invoice numbers: the next number follows the last one, never skipped or reused.

The events live in a registry of their own (:data:`registry`): use
``MemoryStore(registry=dcb.registry)`` (or any store with it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from eventcore import EventRegistry, event, require
from eventcore.boundary import QueryCommand
from eventcore.query import Query

__all__ = [
    "MAX_COURSES",
    "CourseDefined",
    "CreateInvoice",
    "DefineCourse",
    "InvoiceCreated",
    "RegisterUser",
    "StudentSubscribed",
    "Subscribe",
    "UserRegistered",
    "registry",
]

registry = EventRegistry()
"""The registry of these examples' events (``demo.dcb.*``)."""

MAX_COURSES = 5
"""The most courses one student may subscribe to."""


@event("demo.dcb.CourseDefined", registry=registry)
@dataclass(frozen=True)
class CourseDefined:
    """A course was defined with a capacity."""

    course: str
    capacity: int


@event("demo.dcb.StudentSubscribed", registry=registry)
@dataclass(frozen=True)
class StudentSubscribed:
    """A student subscribed to a course."""

    student: str
    course: str


@event("demo.dcb.UserRegistered", registry=registry)
@dataclass(frozen=True)
class UserRegistered:
    """A user registered under a user name."""

    user: str
    name: str


@event("demo.dcb.InvoiceCreated", registry=registry)
@dataclass(frozen=True)
class InvoiceCreated:
    """An invoice was created with the next number."""

    number: int
    customer: str


@dataclass(frozen=True)
class Course:
    """What a subscription decides on."""

    capacity: int | None = None
    subscribers: int = 0
    courses_of_student: int = 0
    subscribed: bool = False


class DefineCourse(QueryCommand[Course, object]):
    """Define a course once."""

    course: str
    capacity: int

    def query(self) -> Query:
        """The course's definition."""
        return Query.of(["demo.dcb.CourseDefined"], [f"course:{self.course}"])

    def initial_state(self) -> Course:
        """No course yet."""
        return Course()

    def apply(self, state: Course, event: object, stream_id: str) -> Course:
        """Only definitions are read."""
        assert isinstance(event, CourseDefined)
        return replace(state, capacity=event.capacity)

    def handle(self, state: Course) -> list[tuple[str, object]]:
        """Refuse a second definition."""
        require(state.capacity is None, f"course {self.course} exists")
        require(self.capacity > 0, "a course holds at least one student")
        return [(f"course-{self.course}", CourseDefined(self.course, self.capacity))]

    def tags_of(self, event: object) -> list[str]:
        """A definition is tagged with its course."""
        return [f"course:{self.course}"]


class Subscribe(QueryCommand[Course, object]):
    """Subscribe a student to a course: within the course's capacity and the student's
    limit of :data:`MAX_COURSES` courses."""

    student: str
    course: str

    def query(self) -> Query:
        """The course's definition and subscriptions, and the student's subscriptions."""
        course = Query.of(
            ["demo.dcb.CourseDefined", "demo.dcb.StudentSubscribed"], [f"course:{self.course}"]
        )
        return course | Query.of(["demo.dcb.StudentSubscribed"], [f"student:{self.student}"])

    def initial_state(self) -> Course:
        """Nothing read yet."""
        return Course()

    def apply(self, state: Course, event: object, stream_id: str) -> Course:
        """Count the course's subscribers and the student's courses."""
        if isinstance(event, CourseDefined):
            return replace(state, capacity=event.capacity)
        assert isinstance(event, StudentSubscribed)
        if event.course == self.course and event.student == self.student:
            state = replace(state, subscribed=True)
        if event.course == self.course:
            state = replace(state, subscribers=state.subscribers + 1)
        if event.student == self.student:
            state = replace(state, courses_of_student=state.courses_of_student + 1)
        return state

    def handle(self, state: Course) -> list[tuple[str, object]]:
        """Check both limits."""
        require(state.capacity is not None, f"no course {self.course}")
        require(not state.subscribed, f"{self.student} is subscribed to {self.course}")
        require(state.subscribers < (state.capacity or 0), f"course {self.course} is full")
        require(
            state.courses_of_student < MAX_COURSES,
            f"{self.student} is subscribed to {MAX_COURSES} courses",
        )
        return [(f"course-{self.course}", StudentSubscribed(self.student, self.course))]

    def tags_of(self, event: object) -> list[str]:
        """A subscription is tagged with its course and its student."""
        assert isinstance(event, StudentSubscribed)
        return [f"course:{event.course}", f"student:{event.student}"]


class RegisterUser(QueryCommand[bool, object]):
    """Register a user under a name nobody has."""

    user: str
    name: str

    def query(self) -> Query:
        """Registrations under this name."""
        return Query.of(["demo.dcb.UserRegistered"], [f"username:{self.name}"])

    def initial_state(self) -> bool:
        """Not taken."""
        return False

    def apply(self, state: bool, event: object, stream_id: str) -> bool:
        """Any registration under the name takes it."""
        return True

    def handle(self, state: bool) -> list[tuple[str, object]]:
        """Refuse a taken name."""
        require(not state, f"the user name {self.name!r} is taken")
        return [(f"user-{self.user}", UserRegistered(self.user, self.name))]

    def tags_of(self, event: object) -> list[str]:
        """A registration is tagged with its name."""
        return [f"username:{self.name}"]


class CreateInvoice(QueryCommand[int, object]):
    """Create an invoice numbered one after the last."""

    customer: str

    def query(self) -> Query:
        """Every invoice (only the last number matters; the state cache keeps it)."""
        return Query.of(["demo.dcb.InvoiceCreated"])

    state_key = ()  # the last number does not depend on the customer

    def initial_state(self) -> int:
        """No invoice yet."""
        return 0

    def apply(self, state: int, event: object, stream_id: str) -> int:
        """The highest number so far."""
        assert isinstance(event, InvoiceCreated)
        return max(state, event.number)

    def handle(self, state: int) -> list[tuple[str, object]]:
        """The next number."""
        return [(f"invoice-{state + 1}", InvoiceCreated(state + 1, self.customer))]

    def tags_of(self, event: object) -> list[str]:
        """An invoice is tagged with its number."""
        assert isinstance(event, InvoiceCreated)
        return [f"invoice:{event.number}"]
