package bench

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

// Countries are 200 assigned ISO 3166-1 alpha-2 codes: the largest
// internet populations first (they get the largest shares), then the
// others in alphabetical order.
var Countries = [...]string{
	"CN", "IN", "US", "ID", "BR", "RU", "JP", "NG", "MX", "PH", "DE", "VN", "GB", "TR", "FR", "IR", "EG", "TH", "IT", "PK",
	"BD", "KR", "ES", "CA", "AR", "PL", "CO", "SA", "ZA", "MY", "UA", "MA", "AU", "NL", "DZ", "TW", "KE", "UZ", "PE", "VE",
	"IQ", "CL", "ET", "SE", "BE", "RO", "KZ", "CZ", "GH", "AE", "PT", "HU", "GR", "NP", "AT", "CH", "IL", "SG", "BY", "TZ",
	"EC", "LK", "SD", "AO", "KH", "UG", "RS", "DK", "FI", "NO", "IE", "NZ", "SK", "HR", "BG", "AD", "AF", "AG", "AI", "AL",
	"AM", "AQ", "AS", "AW", "AX", "AZ", "BA", "BB", "BF", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BS", "BT", "BV",
	"BW", "BZ", "CC", "CD", "CF", "CG", "CI", "CK", "CM", "CR", "CU", "CV", "CW", "CX", "CY", "DJ", "DM", "DO", "EE", "EH",
	"ER", "FJ", "FK", "FM", "FO", "GA", "GD", "GE", "GF", "GG", "GI", "GL", "GM", "GN", "GP", "GQ", "GS", "GT", "GU", "GW",
	"GY", "HK", "HM", "HN", "HT", "IM", "IO", "IS", "JE", "JM", "JO", "KG", "KI", "KM", "KN", "KP", "KW", "KY", "LA", "LB",
	"LC", "LI", "LR", "LS", "LT", "LU", "LV", "LY", "MC", "MD", "ME", "MF", "MG", "MH", "MK", "ML", "MM", "MN", "MO", "MP",
	"MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MZ", "NA", "NC", "NE", "NF", "NI", "NR", "NU", "OM", "PA", "PF", "PG", "PM",
}

func timestampMs(ms int64) *timestamppb.Timestamp {
	return timestamppb.New(time.UnixMilli(ms))
}
