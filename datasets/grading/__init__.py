"""Human grading: which pairs people grade (sampling.py, queue.py) and the grading page with its
sign-in (web.py, signin.py, render.py, static/). The page also serves the report to admins, so this
package sits above report/ (which holds how far each judge agrees with people: agreement.py)."""
