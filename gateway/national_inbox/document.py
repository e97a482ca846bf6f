"""A message of the national inbox as partner apps see it (the contract's object)."""

from gateway.inbox.document import iso_time


def citizen_message_document(message, agency_names):
    """{"id","agency","agency_name","from","text","sent_at","status"} of a
    CitizenMessage; agency_names {id: name} (an agency gone from the config since is
    shown by its id). sent_at: when the agency's message was accepted."""
    return {"id": message.id, "agency": message.agency,
            "agency_name": agency_names.get(message.agency, message.agency),
            "from": message.sender, "text": message.text,
            "sent_at": iso_time(message.created_at), "status": message.status}
