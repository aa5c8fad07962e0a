package tpm

// Test helpers of this package, shared with its external conformance suite.
var (
	StartSwtpmForTest      = startSwtpm
	MakeCredentialForTest  = makeCredential
	Prefix2BForTest        = prefix2B
	UnmarshalPublicForTest = unmarshalPublic
	NewAKForTest           = newAK
	EKsForTest             = eks
	CheckActivationForTest = checkActivation
	CryptoPublicForTest    = cryptoPublic
	AttestParamsForTest    = attestParams
)
